"""Hostile checkpoints: every lie in the metadata or the weights is refused in one line naming the field,
before anything is built from it; the command-line tools exit 1 with that line."""

import json

import pytest
import torch
from hostile import hostile_checkpoints, write_hostile_checkpoint
from safetensors import safe_open

from road_seg_ros.core.checkpoint import CheckpointError, ModelInfo, load_checkpoint, read_info, save_checkpoint
from road_seg_ros.models import build_model
from road_seg_ros.tools.replay import main as replay_main
from road_seg_ros.training.evaluate import main as evaluate_main

CASES = hostile_checkpoints()
METADATA_CASES = [name for name, (change, _) in CASES.items() if not (isinstance(change, dict) and "weights" in change)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny student's weights and the metadata save_checkpoint writes for it."""
    arch = {"name": "student", "size": "tiny"}
    model = build_model(arch).eval()
    path = save_checkpoint(tmp_path_factory.mktemp("good") / "tiny.safetensors", model, ModelInfo(arch=arch))
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["road_seg"])
    return model.state_dict(), metadata


def hostile(tmp_path, tiny, name):
    return write_hostile_checkpoint(tmp_path / f"{name}.safetensors", CASES[name][0], *tiny)


@pytest.mark.parametrize("name", CASES)
def test_hostile_checkpoint_is_refused_in_one_line_naming_the_problem(tmp_path, tiny, name):
    path = hostile(tmp_path, tiny, name)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert CASES[name][1] in message and str(path) in message, message
    assert "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize("name", METADATA_CASES)
def test_reading_the_metadata_alone_applies_the_same_checks(tmp_path, tiny, name):
    path = hostile(tmp_path, tiny, name)
    with pytest.raises(CheckpointError) as error:
        read_info(path)
    assert CASES[name][1] in str(error.value) and str(path) in str(error.value), error.value


def test_the_untouched_metadata_loads(tmp_path, tiny):
    model, info = load_checkpoint(write_hostile_checkpoint(tmp_path / "same.safetensors", {}, *tiny))
    assert info.arch["stage3_channels"] == 64 and len(info.class_colors) == 11
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in tiny[0].items())


def test_a_checkpoint_that_would_not_load_is_not_written(tmp_path):
    model = build_model({"name": "student", "size": "tiny"})
    info = ModelInfo(arch={"name": "student", "size": "tiny"}, std=[0.0, 0.2, 0.2])
    with pytest.raises(CheckpointError, match=r"'std'\[0\] must be a positive finite number"):
        save_checkpoint(tmp_path / "bad.safetensors", model, info)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["std_zero", "num_classes_huge", "weights_nan"])
def test_evaluator_and_offline_replay_exit_with_the_line(tmp_path, tiny, name):
    path = hostile(tmp_path, tiny, name)
    for prog, main, argv in (
        ("road-seg-eval", evaluate_main, ["--checkpoint", str(path), "--device", "cpu", "--limit", "1"]),
        ("road-seg-replay", replay_main, ["--offline", "--checkpoint", str(path), "--out", str(tmp_path / "out")]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        message = exit_info.value.code  # a string: exit status 1, printed on stderr
        assert isinstance(message, str) and message.startswith(f"{prog}: ") and CASES[name][1] in message, message
        assert "\n" not in message
