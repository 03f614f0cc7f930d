"""road-seg-average: the uniform weight average of like checkpoints, and a one-line refusal of unlike ones."""

import pytest
import torch

from road_seg_ros.core.checkpoint import ModelInfo, load_checkpoint, read_info, save_checkpoint
from road_seg_ros.models import build_model
from road_seg_ros.training.average import main

TINY = {"name": "student", "size": "tiny"}


def trained_like(path, seed: int, arch=TINY):
    """A tiny student with random weights and random BatchNorm statistics (as training leaves them)."""
    torch.manual_seed(seed)
    model = build_model(arch)
    for name, tensor in model.state_dict().items():
        if name.endswith("running_var"):
            tensor.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            tensor.normal_()
        elif name.endswith("num_batches_tracked"):
            tensor.fill_(100 + seed)
    info = ModelInfo(arch=arch, input_size=[32, 48], training={"role": "student", "seed": seed})
    return save_checkpoint(path, model.eval(), info)


def test_the_average_is_the_mean_of_every_float_tensor_and_loads_like_any_checkpoint(tmp_path):
    paths = [trained_like(tmp_path / f"seed{seed}.safetensors", seed) for seed in (1, 2, 3)]
    out = tmp_path / "soup" / "average.safetensors"
    main([*map(str, paths), "--out", str(out)])

    averaged, info = load_checkpoint(out)
    members = [load_checkpoint(path)[0].state_dict() for path in paths]
    for name, tensor in averaged.state_dict().items():
        if tensor.is_floating_point():
            expected = sum(member[name] for member in members) / 3
            torch.testing.assert_close(tensor, expected, msg=name)
        else:
            assert torch.equal(tensor, members[0][name]), name
    assert info.input_size == [32, 48]
    assert [member["seed"] for member in info.training["average_of"]] == [1, 2, 3]
    assert info.training["command"].startswith("road-seg-average ")
    assert averaged(torch.rand(1, 3, 32, 48))["out"].shape == (1, 11, 32, 48)


def test_unlike_checkpoints_are_refused_in_one_line_and_nothing_is_written(tmp_path):
    tiny = trained_like(tmp_path / "tiny.safetensors", 1)
    small = trained_like(tmp_path / "small.safetensors", 2, arch={"name": "student", "size": "small"})
    out = tmp_path / "average.safetensors"
    with pytest.raises(SystemExit) as exited:
        main([str(tiny), str(small), "--out", str(out)])
    assert "arch differs" in str(exited.value) and "\n" not in str(exited.value)
    assert not out.exists()
    with pytest.raises(SystemExit) as exited:
        main([str(tiny), str(tmp_path / "missing.safetensors"), "--out", str(out)])
    assert "checkpoint not found" in str(exited.value)
    assert not out.exists() and read_info(tiny).training["seed"] == 1


def test_one_checkpoint_is_not_an_average(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(trained_like(tmp_path / "one.safetensors", 1)), "--out", str(tmp_path / "out.safetensors")])
    assert exited.value.code == 2
    assert "at least two checkpoints" in capsys.readouterr().err
