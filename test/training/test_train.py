"""Training overfits a handful of real CamVid frames; distillation, resume and 2-process DDP run."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel

from road_seg_ros.core.checkpoint import read_info
from road_seg_ros.models import ARCHITECTURES
from road_seg_ros.training.config import ConfigError, checked_config, read_config_file
from road_seg_ros.training.train import ema_with_warmup, main

REPO_ROOT = Path(__file__).resolve().parents[2]

OVERFIT = [
    "--set", "limit=4", "--set", "val_split=train", "--set", "val_limit=4",
    "--set", "crop_size=[360,480]", "--set", "scale_range=[1.0,1.0]", "--set", "jitter=0",
    "--set", "workers=0", "--set", "warmup_epochs=1", "--set", "loss=ce",
    "--set", "arch={name: student, size: tiny}",

]  # fmt: skip
# Everything but the overfit test only needs the loop to run: small crops, two validation frames.
QUICK = [*OVERFIT, "--set", "crop_size=[128,160]", "--set", "val_limit=2"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher")
    main(["teacher", "--out", str(run), "--epochs", "1", "--batch-size", "2",
          *QUICK, "--set", "arch={name: teacher, backbone: resnet18}"])  # fmt: skip
    return run / "best.safetensors"


def _log(run: Path):
    with (run / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_student_overfits_a_few_frames(tmp_path):
    run = tmp_path / "run"
    main(["student", "--out", str(run), "--epochs", "60", "--batch-size", "4", "--lr", "0.01",
          "--set", "eval_interval=20", *OVERFIT, "--set", "crop_size=[180,240]"])  # fmt: skip
    rows = _log(run)
    first, last = float(rows[0]["loss_supervised"]), float(rows[-1]["loss_supervised"])
    assert last < 0.5 * first
    info = read_info(run / "best.safetensors")
    assert info.training["val_miou"] > 25.0  # chance is about 9% over 11 classes
    assert (run / "curves.png").stat().st_size > 0


def test_distillation_from_a_teacher_and_resume(tmp_path, teacher):
    student = tmp_path / "student"
    common = ["student", "--out", str(student), "--teacher", str(teacher),
              "--batch-size", "2", "--set", "eval_interval=1", *QUICK]  # fmt: skip
    main([*common, "--epochs", "1"])
    assert {"loss_kd_pixel", "loss_kd_cwd"} <= set(_log(student)[0])
    main([*common, "--epochs", "2", "--resume"])
    assert [row["epoch"] for row in _log(student)] == ["1", "2"]
    assert read_info(student / "best.safetensors").training["teacher"].endswith("best.safetensors")


def test_distill_flag_turns_terms_off(tmp_path, teacher):
    student = tmp_path / "student"
    main(["student", "--out", str(student), "--teacher", str(teacher), "--distill", "cwd",
          "--epochs", "1", "--batch-size", "2", *QUICK])  # fmt: skip
    columns = set(_log(student)[0])
    assert "loss_kd_cwd" in columns and "loss_kd_pixel" not in columns


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--set", "nonsense=1"], "unknown config field"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["--distill", "both"], "--distill needs --teacher"),
        (["--data", "/nonexistent"], "no CamVid data set"),
        (["--init", "/nonexistent.safetensors"], "checkpoint not found"),
        (["--set", "ema_decay=1.5"], "'ema_decay' must be in (0, 1)"),
    ],
)
def test_bad_arguments_exit_with_one_line_reason(tmp_path, capsys, argv, reason):
    with pytest.raises(SystemExit) as exit_info:
        main(["student", "--out", str(tmp_path / "run"), *argv])
    assert reason in str(exit_info.value.code) and "\n" not in str(exit_info.value.code)


def test_fine_tuning_starts_from_the_checkpoint_and_keeps_an_average(tmp_path, teacher):
    start = tmp_path / "start"
    main(["student", "--out", str(start), "--epochs", "1", "--batch-size", "2", *QUICK])
    tuned = tmp_path / "tuned"
    common = ["student", "--out", str(tuned), "--init", str(start / "best.safetensors"), "--batch-size", "2",
              "--lr", "0", "--set", "ema_decay=0.5", "--set", "eval_interval=1", *QUICK]  # fmt: skip
    main([*common, "--epochs", "1"])
    main([*common, "--epochs", "2", "--resume"])
    initial, averaged = load_file(start / "best.safetensors"), load_file(tuned / "best.safetensors")
    # lr 0: the weights never move, so their average is the checkpoint we started from
    weights = [name for name in initial if name.endswith(".weight")]
    assert weights and all(torch.allclose(initial[name], averaged[name]) for name in weights)
    assert read_info(tuned / "best.safetensors").training["init"].endswith("best.safetensors")
    assert [row["epoch"] for row in _log(tuned)] == ["1", "2"]
    # lr > 0: the weights move, and the checkpoint written is their average, not the last weights
    moving = tmp_path / "moving"
    main([*common[:2], str(moving), *common[3:], "--lr", "0.01", "--epochs", "1", "--set", "keep_checkpoint=last"])
    state = torch.load(moving / "last.pt", weights_only=True)
    averaged = {name.removeprefix("module."): value for name, value in state["ema"].items()}
    written = load_file(moving / "final.safetensors")
    assert all(torch.equal(written[name], averaged[name]) for name in weights)
    assert any(not torch.allclose(written[name], state["model"][name]) for name in weights)

    with pytest.raises(SystemExit, match="holds a different network"):
        main(["student", "--out", str(tmp_path / "wrong"), "--init", str(teacher), "--epochs", "1", *QUICK])


def test_a_resumed_run_follows_its_new_length(tmp_path):
    run = tmp_path / "run"
    common = ["student", "--out", str(run), "--batch-size", "2", "--lr", "0.01", *QUICK, "--set", "warmup_epochs=0"]
    main([*common, "--epochs", "1"])
    assert float(_log(run)[0]["lr"]) == 0.0  # a one-epoch schedule has decayed to zero
    main([*common, "--epochs", "4", "--resume"])
    rows = _log(run)
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    # epoch 2 of 4 ends half-way through the resumed schedule, not past the end of the first one
    assert float(rows[1]["lr"]) == pytest.approx(0.01 * 0.5**0.9)


def test_a_resumed_run_can_restart_its_average(tmp_path):
    run = tmp_path / "run"
    common = ["student", "--out", str(run), "--batch-size", "2", *QUICK, "--set", "ema_decay=0.999"]
    main([*common, "--epochs", "1"])

    def updates():
        return int(torch.load(run / "last.pt", weights_only=True)["ema"]["n_averaged"])

    per_epoch = updates()
    main([*common, "--epochs", "2", "--resume"])
    assert updates() == 2 * per_epoch
    main([*common, "--epochs", "3", "--resume", "--restart-average"])
    assert updates() == per_epoch  # only the last epoch's steps are in the average
    with pytest.raises(SystemExit, match="--restart-average needs --resume"):
        main([*common, "--epochs", "4", "--restart-average"])


def test_the_average_warms_up_instead_of_keeping_the_initial_weights():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    average = AveragedModel(model, multi_avg_fn=ema_with_warmup(0.999), use_buffers=True)
    average.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_var.fill_(4.0)
    model[1].num_batches_tracked.fill_(7)
    for _ in range(30):
        average.update_parameters(model)
    # a constant 0.999 would still hold 97% of the initial weights; the warm-up holds under 1%
    assert torch.allclose(average.module[0].weight, model[0].weight, atol=0.01)
    assert torch.allclose(average.module[1].running_var, model[1].running_var, atol=0.04)
    assert int(average.module[1].num_batches_tracked) == 7


def test_two_process_ddp_on_gloo(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "road_seg_ros.training.train", "student",
         "--out", str(tmp_path / "ddp"), "--epochs", "1", "--batch-size", "2", "--device", "cpu", *QUICK],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_log(tmp_path / "ddp")) == 1
    assert (tmp_path / "ddp" / "best.safetensors").is_file()


def test_device_augmentation_path_trains(tmp_path):
    run = tmp_path / "device"
    main(["student", "--out", str(run), "--epochs", "2", "--batch-size", "2", "--device", "cpu",
          "--set", "device_augmentation=true", *QUICK])  # fmt: skip
    assert len(_log(run)) == 2


def test_time_budget_ends_the_run_with_a_decayed_schedule(tmp_path):
    run = tmp_path / "budget"
    main(["student", "--out", str(run), "--epochs", "50", "--batch-size", "4",
          "--set", "time_budget_minutes=0.0001", *QUICK])  # fmt: skip
    rows = _log(run)
    assert len(rows) == 1  # the budget (6 ms) is spent after the first epoch
    assert float(rows[0]["lr"]) == 0.0
    assert (run / "best.safetensors").is_file()


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "config").glob("train_*.yaml")), ids=lambda path: path.name)
def test_every_shipped_training_config_passes_the_checks(path):
    role = "teacher" if "teacher" in path.name else "student"
    config = checked_config(read_config_file(path), role)
    assert config.arch["name"] in ARCHITECTURES[role] and config.epochs >= 1


def test_a_config_file_overrides_the_base_it_names(tmp_path):
    (tmp_path / "parent.yaml").write_text("epochs: 60\nlr: 0.003\nseed: 0\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nepochs: 16\n")
    assert read_config_file(tmp_path / "child.yaml") == {"epochs": 16, "lr": 0.003, "seed": 0}
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\n")
    with pytest.raises(ConfigError, match="one level only"):
        read_config_file(tmp_path / "grandchild.yaml")
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "orphan.yaml")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lr", "fast", "'lr' must be a number, got 'fast'"),
        ("epochs", "abc", "'epochs' must be an integer"),
        ("epochs", -5, "'epochs' must be in [1, 100000], got -5"),
        ("crop_size", 5, "'crop_size' must be a pair"),
        ("crop_size", [5, 5], "'crop_size' must be in [32, 4096]"),
        ("eval_interval", 0, "'eval_interval' must be in [1"),
        ("scale_range", [2.0, 0.5], "must be [low, high]"),
        ("distillation", [{"name": "feature", "weight": 1, "temperature": 1}], "must be one of pixel, cwd"),
        ("train_split", "train+test+bogus", "split must be one of"),
        ("arch", {"size": "huge"}, "unknown student size 'huge'"),
        ("amp", "yes", "'amp' must be true or false"),
    ],
)
def test_bad_config_values_are_named_in_one_line(field, value, words):
    with pytest.raises(ConfigError) as error:
        checked_config({field: value}, "student")
    assert words in str(error.value) and "\n" not in str(error.value)


def test_yaml_syntax_errors_are_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [0.1\nepochs: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["student", "--out", str(tmp_path / "run"), "--config", str(broken)])
    message = str(exit_info.value.code)
    assert message.startswith("road-seg-train: config file") and "not valid YAML" in message and "\n" not in message
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_keep_last_saves_the_final_epoch_whatever_val_says(tmp_path):
    run = tmp_path / "final"
    main(["student", "--out", str(run), "--epochs", "2", "--batch-size", "2", "--set", "eval_interval=1",
          "--set", "keep_checkpoint=last", *QUICK])  # fmt: skip
    info = read_info(run / "final.safetensors")
    assert info.training["epoch"] == 2 and "final epoch" in info.description
    assert not (run / "best.safetensors").exists()
