"""The package's logger (graphspec.log) and the command line's --quiet / --verbose."""
from __future__ import annotations

import logging

import pytest

from test_distill import STUDENT

RECIPE = ("semantics: pytorch\nepochs: 1\nbatch_size: 8\npreprocessing: {size: [32, 32]}\n"
          "losses: {embeddings: {loss: triplet}}\ndata: {per_class: 4}\n")


@pytest.fixture
def run(tmp_path, cli):
    from graphspec.faces.data import synthetic_faces
    faces = synthetic_faces(tmp_path / "faces", identities=4, images=4, seed=0, size=32)
    (sorted(p for p in faces.iterdir() if p.is_dir())[0] / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "s.yaml").write_text(STUDENT)
    (tmp_path / "r.yaml").write_text(RECIPE)

    def train(*flags):
        return cli("train", str(tmp_path / "s.yaml"), "--data", str(faces), "--recipe", str(tmp_path / "r.yaml"),
                   "--out", str(tmp_path / f"run{len(flags)}{''.join(flags)}"), "--device", "cpu", *flags)
    yield train
    assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger("graphspec").handlers)


def test_quiet_keeps_warnings_and_drops_progress_and_score_lines(run):
    rc, out, err = run("--quiet")
    assert rc == 0, err
    assert "Score at iteration" not in out and "training " not in out
    assert "warning: skipped 1 file(s)" in err and "broken.jpg" in err


def test_normal_shows_the_score_lines_and_verbose_adds_what_the_command_does(run):
    rc, out, err = run()
    assert rc == 0 and "Score at iteration 0 is" in out
    assert "checkpoint:" not in err and "device:" not in err
    rc, out, err = run("--verbose")
    assert rc == 0, err
    assert "device: cpu" in err and "checkpoint: " in err and "image cache: " in err


def test_quiet_and_verbose_together_are_refused(run):
    with pytest.raises(SystemExit):
        run("--quiet", "--verbose")


def test_the_library_prints_nothing_until_someone_configures_its_logger(capsys):
    from graphspec.log import logger
    logger.debug("hidden")
    logger.info("hidden")
    assert capsys.readouterr() == ("", "")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
