"""Every value of a recipe is validated where it is written: the key path and the recipe's file:line:col, exit 2,
never an internal error; NaN and infinity are refused in every numeric field (typed or free-form); an evaluation
split that leaves nothing to train on is refused before any image is decoded; and a file a recipe names is never
quoted in an error."""
from __future__ import annotations

import numpy as np
import pytest

import graphspec
from graphspec.data import ArrayData
from graphspec.errors import GraphspecError, SpecError
from graphspec.train.recipe import MAX_DRAWN, SEED_LIMIT, Recipe, load_recipe
from graphspec.train.trainer import Trainer
from specs_tiny import TINY_CLASSIFIER, tiny_conv

SPEC = TINY_CLASSIFIER

# (recipe text, the error after "FILE:"): at the value's key (or list item) on line 2; a block's own rule at its key
REFUSED = [
    ("optimizer:\n  betas: [0.9, 1.0]\n", "2:16: 'optimizer.betas.1': input should be less than 1; received 1.0"),
    ("optimizer:\n  betas: [-0.1, 0.9]\n", "2:11: 'optimizer.betas.0': input should be greater than or equal to 0; "
                                           "received -0.1"),
    ("optimizer:\n  eps: 0\n", "2:3: 'optimizer.eps': input should be greater than 0; received 0"),
    ("optimizer:\n  eps: -1.0e-8\n", "2:3: 'optimizer.eps': input should be greater than 0; received -1e-08"),
    ("optimizer:\n  weight_decay: -0.1\n", "2:3: 'optimizer.weight_decay': input should be greater than or equal "
                                           "to 0; received -0.1"),
    ("optimizer:\n  momentum: -0.5\n", "2:3: 'optimizer.momentum': input should be greater than or equal to 0; "
                                       "received -0.5"),
    ("optimizer:\n  lr: .inf\n", "2:3: 'optimizer.lr': input should be a finite number; received inf"),
    ("optimizer:\n  lr: .nan\n", "2:3: 'optimizer.lr': input should be a finite number; received nan"),
    ("epochs: 1\nseed: -1\n", "2:1: 'seed': input should be greater than or equal to 0; received -1"),
    (f"epochs: 1\nseed: {SEED_LIMIT}\n", f"2:1: 'seed': input should be less than {SEED_LIMIT}; received {SEED_LIMIT}"),
    ("schedule:\n  gamma: 0\n", "2:3: 'schedule.gamma': input should be greater than 0; received 0"),
    ("augmentation:\n  load_size: 20000\n", "2:3: 'augmentation.load_size': input should be less than or equal to "
                                           "1024; received 20000"),
    ("augmentation:\n  rotate: .nan\n", "2:3: 'augmentation.rotate': input should be a finite number; received nan"),
    ("augmentation:\n  zoom: [0.9, .inf]\n", "2:15: 'augmentation.zoom.1': input should be a finite number; "
                                             "received inf"),
    ("epochs: 1\nmax_minutes: .inf\n", "2:1: 'max_minutes': input should be a finite number; received inf"),
    ("losses:\n  out: {weight: .nan}\n", "2:9: 'losses.out.weight': input should be a finite number; received nan"),
    ("data:\n  pairs: 1000000000\n", f"2:3: 'data.pairs': input should be less than or equal to {MAX_DRAWN}; "
                                     "received 1000000000"),
    ("preprocessing:\n  size: nine\n", "2:3: 'preprocessing.size': input should be a valid tuple; received 'nine'"),
    ("preprocessing:\n  scale: standardize\n", "1:1: 'preprocessing': scale 'standardize' needs both mean and std "
                                               "(3 values each)"),
    ("preprocessing:\n  {scale: standardize, mean: [.nan, 0.5, 0.5], std: [1, 1, 1]}\n",
     "2:31: 'preprocessing.mean.0': input should be a finite number; received nan"),
    ("head:\n  {head: cosine, scale: .inf}\n", "2:18: 'head.scale': input should be a finite number; received inf"),
]


@pytest.mark.parametrize("text, message", REFUSED, ids=[m.split("'")[1] for _, m in REFUSED])
def test_each_invalid_value_is_a_located_recipe_error(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}:{message}"


@pytest.mark.usefixtures("isolated_cache")
@pytest.mark.parametrize("text, message", [REFUSED[0], REFUSED[2], REFUSED[8], REFUSED[6], REFUSED[16]])
def test_the_command_line_exits_2_with_the_located_error(tmp_path, cli, text, message):
    """Before: betas/eps/seed ended in `internal error: ValueError`, a preprocessing block in a ValidationError
    traceback, and lr .inf trained until the score became NaN (exit 1)."""
    spec, recipe = tmp_path / "net.yaml", tmp_path / "r.yaml"
    spec.write_text(SPEC)
    recipe.write_text(text)
    rc, out, err = cli("train", spec, "--recipe", recipe, "--data", "synthetic", "--out", tmp_path / "run")
    assert (rc, err) == (2, f"error: {recipe}:{message}\n")
    assert not (tmp_path / "run").exists()  # refused before the run folder was touched


def test_a_flag_value_is_refused_with_its_key_and_no_recipe_line(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 1\n")
    rc, _, err = cli("train", tmp_path / "net.yaml", "--recipe", recipe, "--seed", "-3")
    assert (rc, err) == (2, "error: 'seed': input should be greater than or equal to 0; received -3\n")


@pytest.mark.parametrize("text", ["", "# every default\n", "---\n"])
def test_an_empty_recipe_means_every_default(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert load_recipe(path).model_dump() == Recipe().model_dump()


@pytest.mark.parametrize("text, kind", [("- epochs: 2\n", "list"), ("fast\n", "str"), ("3\n", "int")])
def test_a_recipe_that_is_not_a_mapping_is_refused(tmp_path, text, kind):
    """Before: anything but a mapping was silently read as the defaults."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(GraphspecError) as e:
        load_recipe(path)
    assert str(e.value) == (f"{path}:1:1: expected a recipe: a mapping of settings (epochs, batch_size, optimizer, "
                            f"...); received {kind}")


def test_an_oversized_recipe_is_refused_as_a_recipe(tmp_path, monkeypatch):
    from graphspec.spec import yaml_source
    monkeypatch.setattr(yaml_source, "MAX_BYTES", 10)
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 100\n")
    with pytest.raises(GraphspecError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}: file is 12 bytes; recipes are limited to 10 bytes"


def test_a_section_that_is_not_a_mapping_is_reported_even_with_a_flag_inside_it(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 1\ndata: 5\n")
    with pytest.raises(SpecError) as e:
        load_recipe(path, {"data.limit": 3})  # before: TypeError ('int' object does not support item assignment)
    assert str(e.value) == f"{path}:2:1: 'data': input should be a valid dictionary or instance of DataRecipe; " \
                           "received 5"


def test_edge_values_are_accepted_and_a_recipe_equals_itself_wherever_it_was_read(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"seed: {SEED_LIMIT - 1}\noptimizer: {{betas: [0.0, 0.999999], weight_decay: 0, eps: 1.0e-30}}\n")
    recipe = load_recipe(path)
    assert recipe.seed == SEED_LIMIT - 1 and recipe.optimizer.betas == (0.0, 0.999999)
    assert recipe == Recipe(seed=SEED_LIMIT - 1, optimizer=recipe.optimizer)  # the file's positions are not compared
    assert str(recipe.where("optimizer.betas")) == f"{path}:2:13"
    assert str(load_recipe(path, {"seed": 4}).where("seed")) == ""  # a flag: no recipe line


@pytest.mark.usefixtures("isolated_cache", "one_thread")
@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_an_evaluation_split_that_leaves_no_training_data_is_refused_before_any_image_is_decoded(
        tmp_path, cli, monkeypatch, semantics):
    """Before: ZeroDivisionError (pytorch) or a run of zero iterations reported as a success (dl4j)."""
    import graphspec.faces.data.dataset as dataset
    spec, recipe, faces = tmp_path / "net.yaml", tmp_path / "r.yaml", tmp_path / "faces"
    spec.write_text(SPEC)
    recipe.write_text(f"semantics: {semantics}\ndata:\n  eval_fraction: 0.99\n")
    rc, _, err = cli("dataset", faces, "--synthetic", "4x6", "--format", "json")
    assert rc == 0, err

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded")
    monkeypatch.setattr(dataset, "open_or_build", no_decoding)
    rc, _, err = cli("train", spec, "--recipe", recipe, "--data", faces, "--out", tmp_path / "run")
    assert (rc, err) == (2, f"error: {recipe}:3:3: 'data.eval_fraction': 0.99 leaves no training example; "
                            "lower it\n")


def test_the_trainer_refuses_empty_training_data():
    empty = ArrayData(np.zeros((0, 3, 12, 12), dtype=np.uint8), np.zeros(0, dtype=np.int64), ["a", "b"])
    with pytest.raises(GraphspecError) as e:
        Trainer(graphspec.build(tiny_conv(0.01)), Recipe(), empty, progress=False)
    assert str(e.value) == "the training data holds no example"
    held_out_all = Recipe(data={"eval_fraction": 0.5})
    with pytest.raises(GraphspecError) as e:
        Trainer(graphspec.build(tiny_conv(0.01)), held_out_all, empty, progress=False)
    assert str(e.value) == "'data.eval_fraction': 0.5 leaves no training example; lower it"


@pytest.mark.usefixtures("isolated_cache")
def test_a_file_a_recipe_names_is_never_quoted_in_an_error(tmp_path, cli):
    """Before: `data: {people: /etc/passwd}` printed the first line of /etc/passwd."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN-12345 and more\nsecond line\n")
    spec, recipe = tmp_path / "net.yaml", tmp_path / "r.yaml"
    spec.write_text(SPEC)
    recipe.write_text(f"epochs: 1\ndata:\n  people: {secret}\n")
    rc, out, err = cli("train", spec, "--recipe", recipe, "--data", "synthetic", "--out", tmp_path / "run")
    assert "TOP-SECRET" not in out + err
    assert (rc, err) == (2, f"error: {recipe}:3:3: 'data.people': {secret} is not a people file (line 1, column 1 "
                            "does not fit: a count, then 'NAME N' lines; `graphspec dataset DIR --people FILE` says "
                            "more)\n")
