"""``graphspec train --out RUN --resume`` needs nothing else: the run directory records the spec, the recipe with
every override, and the data source; anything given that contradicts the record is refused before any work."""
from __future__ import annotations

import pytest
import yaml
from specs_tiny import TINY_CLASSIFIER

SPEC = TINY_CLASSIFIER

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")


@pytest.fixture
def started(tmp_path, cli):
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    faces = tmp_path / "faces"
    rc, out, err = cli("dataset", faces, "--synthetic", "4x6", "--format", "json")
    assert rc == 0, err
    run = tmp_path / "run"
    rc, out, err = cli("train", spec, "--data", faces, "--out", run, "--epochs", "1", "--batch-size", "8",
                       "--print-every", "100")
    assert rc == 0, err
    return spec, faces, run


def test_resume_needs_only_the_run_directory(started, cli):
    spec, faces, run = started
    assert yaml.safe_load((run / "data.yaml").read_text()) == {"data": str(faces.resolve())}
    rc, out, err = cli("train", "--out", run, "--resume")
    assert rc == 0, err
    assert f"data: {faces.resolve()}" in out


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "3"], "--resume: epochs 3 (the run has 1) contradicts the recorded run; drop the flag or start a "
                        "new run"),
    (["--data", "synthetic"], "--resume: --data synthetic contradicts the recorded run (trained on "),
])
def test_a_flag_that_contradicts_the_run_is_refused(started, cli, flags, message):
    _, _, run = started
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    rc, out, err = cli("train", "--out", run, "--resume", *flags)
    assert rc == 2 and message in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing was done


def test_another_spec_is_refused_and_a_missing_spec_is_explained(started, cli, tmp_path):
    spec, _, run = started
    rc, _, err = cli("train", spec, "--out", run, "--resume")
    assert rc == 2 and "--resume continues the run's own spec" in err
    rc, _, err = cli("train", "--out", tmp_path / "new")
    assert rc == 2 and "train needs a SPEC (a spec, model file or catalogued model), or --resume with --out" in err
    rc, _, err = cli("train", "--out", tmp_path / "none", "--resume")
    assert rc == 2 and "--resume needs --out RUN_DIR of an earlier run" in err
