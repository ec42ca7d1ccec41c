"""Fixtures the test modules share.

LFW and the reference texts are located exactly as the product locates them (``GRAPHSPEC_LFW``, then
``../shared/data/lfw`` beside the checkout), never by an absolute path, so that a test that needs them runs
wherever they exist and skips, saying why, where they do not.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Caches, downloads and generated data sets go to this test's own folder."""
    monkeypatch.setenv("GRAPHSPEC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster and avoids contention on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lfw_root() -> Path | None:
    """The LFW folder as the product finds it, or None."""
    from graphspec.faces.data import locate_lfw
    return locate_lfw()


@pytest.fixture
def lfw_images() -> Path:
    """LFW's deep-funneled image folder; skips the test where LFW is not on the machine."""
    return lfw_images_folder()


def lfw_images_folder() -> Path:
    """LFW's deep-funneled image folder (for helpers that are not fixtures); skips where LFW is absent."""
    root = lfw_root()
    if root is None:
        pytest.skip("LFW not found (set GRAPHSPEC_LFW, or keep ../shared/data/lfw beside the checkout)")
    deep = root / "lfw-deepfunneled"
    return deep if deep.is_dir() else root


def reference(name: str) -> Path:
    """A reference text in ../shared/reference (e.g. SEMANTICS.md)."""
    return SHARED / "reference" / name


@pytest.fixture
def cli(capsys):
    """Run the command line in-process: ``rc, out, err = cli("summary", path)``; no command prints a traceback."""
    from graphspec.cli import main

    def run(*argv) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return rc, out, err
    return run
