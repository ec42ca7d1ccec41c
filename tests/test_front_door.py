"""How the command line speaks: interruptions are not errors, errors not about a file carry no placeholder
location, Python warnings are one-line notes, and arguments are checked before any work."""
from __future__ import annotations

import argparse
import warnings

import pytest

from graphspec.cli import _run
from graphspec.errors import GraphspecError
from graphspec.train.trainer import Interrupted


def _args(func) -> argparse.Namespace:
    return argparse.Namespace(func=func, debug=False)


def _raise(error):
    def func(args):
        raise error
    return func


def test_an_interruption_is_reported_as_one_not_as_an_error(capsys):
    rc = _run(_args(_raise(Interrupted("interrupted at epoch 2, iteration 17; checkpoint saved to runs/x/ckpt; "
                                       "continue with --resume"))))
    err = capsys.readouterr().err
    assert rc == 130
    assert err == "interrupted: interrupted at epoch 2, iteration 17; checkpoint saved to runs/x/ckpt; continue " \
                  "with --resume\n"


def test_an_error_that_is_not_about_a_file_has_no_placeholder_location(capsys):
    assert _run(_args(_raise(GraphspecError("no images found in photos/")))) == 2
    assert capsys.readouterr().err == "error: no images found in photos/\n"


def test_recipe_flag_errors_name_the_flag_not_a_placeholder_file(tmp_path, cli):
    rc, _, err = cli("train", "x.yaml", "--eval-fraction", "3", "--out", tmp_path / "r")
    assert rc == 2
    assert "<defaults>" not in err and "<spec>" not in err
    assert err.startswith("error: 'data.eval_fraction': ")


def test_python_warnings_are_one_line_notes(monkeypatch, capsys):
    import graphspec.cli

    def validate(args):
        warnings.warn("the model records no\n   preprocessing", UserWarning)
        return 0
    monkeypatch.setattr(graphspec.cli, "cmd_validate", validate)
    assert graphspec.cli.main(["validate", "x.yaml"]) == 0
    assert capsys.readouterr().err == "warning: the model records no preprocessing\n"
    assert warnings.showwarning is not graphspec.cli._note  # restored after the command


def test_upgrade_says_when_a_spec_is_current_and_refuses_a_newer_one(tmp_path, cli):
    current = tmp_path / "current.yaml"
    current.write_text("version: 1\nname: t\ninputs: {x: {type: feed_forward, size: 2}}\n"
                       "vertices: {d: {type: dense, inputs: [x], out: 1}}\noutputs: [d]\n")
    rc, out, err = cli("upgrade", current)
    assert rc == 0 and out.startswith("version: 1\nname: t\n")
    assert err == f"{current}: already at version 1, the current spec language; nothing to upgrade\n"
    newer = tmp_path / "newer.yaml"
    newer.write_text(current.read_text().replace("version: 1", "version: 7"))
    rc, out, err = cli("upgrade", newer)
    assert rc == 2 and out == ""
    assert err == (f"error: {newer}:1:1: spec version 7 is newer than this graphspec understands (up to 1); "
                   "upgrade graphspec\n")
