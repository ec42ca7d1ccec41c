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
