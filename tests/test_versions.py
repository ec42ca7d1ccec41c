"""Spec versioning: newer versions are refused; older ones go through the upgrade chain with a warning."""
from __future__ import annotations

import pytest

import graphspec
from graphspec.errors import GraphspecError
from graphspec.spec import versions

V1_WITH_UNITS = """version: 1
name: old
inputs: {x: {type: feed_forward, size: 4}}
vertices:
  d: {type: dense, inputs: [x], units: 3, activation: identity}
outputs: [d]
"""


@pytest.fixture
def pretend_version_2(monkeypatch):
    """A graphspec whose language is at version 2, where version 1's dense 'units' was renamed 'out'."""
    monkeypatch.setattr(versions, "CURRENT", 2)
    monkeypatch.setattr(versions, "UPGRADES", {})

    @versions.register(1, "dense 'units' is now 'out'")
    def rename_units(doc):
        for v in doc["vertices"].values():
            if isinstance(v, dict) and "units" in v:
                v["out"] = v.pop("units")
        return doc
    return rename_units


def test_an_older_spec_is_upgraded_with_a_deprecation_warning(pretend_version_2):
    with pytest.warns(versions.SpecDeprecationWarning, match=r"<string>: spec version 1 is deprecated and was "
                                                             r"upgraded to 2: dense 'units' is now 'out'"):
        spec = graphspec.load_spec(V1_WITH_UNITS)
    assert spec.version == 2
    assert spec.vertices["d"].cfg.out == 3
    assert graphspec.build(spec)(__import__("torch").zeros(2, 4)).shape == (2, 3)


def test_the_upgrade_does_not_modify_the_callers_document(pretend_version_2):
    import yaml
    doc = yaml.safe_load(V1_WITH_UNITS)
    with pytest.warns(versions.SpecDeprecationWarning):
        graphspec.load_spec(doc)
    assert doc["vertices"]["d"]["units"] == 3 and doc["version"] == 1


def test_without_the_upgrade_the_renamed_key_is_an_error():
    with pytest.raises(GraphspecError) as e:
        graphspec.load_spec(V1_WITH_UNITS)
    assert "unknown key 'units'" in str(e.value)


def test_a_version_with_no_upgrade_path_is_refused(monkeypatch):
    monkeypatch.setattr(versions, "CURRENT", 3)
    monkeypatch.setattr(versions, "UPGRADES", {})
    with pytest.raises(GraphspecError) as e:
        graphspec.load_spec(V1_WITH_UNITS)
    assert str(e.value) == ("<string>: spec version 1 can no longer be read (no upgrade from it); this graphspec "
                            "reads versions 3 to 3")


def test_a_newer_version_is_refused():
    with pytest.raises(GraphspecError) as e:
        graphspec.load_spec(V1_WITH_UNITS.replace("version: 1", "version: 7"))
    assert str(e.value) == ("<string>:1:1: spec version 7 is newer than this graphspec understands (up to 1); "
                            "upgrade graphspec")


def test_cli_upgrade_prints_the_upgraded_document(pretend_version_2, tmp_path, capsys):
    import yaml

    from graphspec.cli import main
    path = tmp_path / "old.yaml"
    path.write_text(V1_WITH_UNITS)
    assert main(["upgrade", str(path)]) == 0
    out, err = capsys.readouterr()
    doc = yaml.safe_load(out)
    # the deprecation is one line on stderr, without the Python source line that raised it
    assert err.splitlines() == [f"warning: {path}: spec version 1 is deprecated and was upgraded to 2: dense 'units' "
                                "is now 'out'; update the file (`graphspec upgrade` prints the upgraded spec)"]
    assert doc["version"] == 2 and doc["vertices"]["d"]["out"] == 3 and "units" not in doc["vertices"]["d"]
