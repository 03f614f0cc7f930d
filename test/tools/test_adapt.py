"""road-seg-adapt: a tiny bag adapts end to end in seconds; the no-label path never reads ground truth;
bad inputs end in one line with nothing left behind as a result."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import camvid_drive_frames, cpu_engine

from road_seg_ros.core.checkpoint import load_checkpoint, read_info
from road_seg_ros.tools import adapt, bags
from road_seg_ros.tools.adapt import TEACHER_SCALES, choose_teacher, committed_teacher, main
from road_seg_ros.tools.bags import write_camera_bag
from road_seg_ros.training import optim
from road_seg_ros.training.self_training import SelfTraining, SelfTrainingSettings, distillation_losses, with_crop

FRAMES = 12
QUICK = ["--max-steps", "3", "--source-limit", "4", "--no-progress", "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_committed_teacher(monkeypatch):
    """Tiny runs take the fallback teacher (the base student), as where no teacher is installed: the shipped
    one runs at full size, four scales and flipped, a second a frame."""
    monkeypatch.setattr(adapt, "committed_teacher", lambda: None)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A compressed drive whose ground-truth topic is unreadable (32FC1): only --gt-topic may touch it."""
    path = tmp_path_factory.mktemp("adapt") / "drive.mcap"
    frames = camvid_drive_frames("Seq05VD", FRAMES)
    write_camera_bag(path, [(rgb, None) for rgb, _ in frames], encoding="jpeg")
    with bags.BagRecorder(path.with_name("with_gt.mcap")) as recorder, bags.CameraBag(path) as source:
        for frame in source.frames():
            recorder.write(bags.COMPRESSED_TOPIC, frame.msgtype, frame.stamp_ns, frame.rawdata)
            bad_truth = bags.TYPESTORE.types[bags.IMAGE_TYPE](
                header=bags._header(frame.stamp_ns), height=2, width=2, encoding="32FC1", is_bigendian=0, step=8,
                data=np.zeros(16, np.uint8),
            )  # fmt: skip
            recorder.write(bags.GROUND_TRUTH_TOPIC, bags.IMAGE_TYPE, frame.stamp_ns,
                           bytes(bags.TYPESTORE.serialize_cdr(bad_truth, bags.IMAGE_TYPE)))  # fmt: skip
    return path.with_name("with_gt.mcap")


@pytest.fixture(scope="module")
def adapted(drive, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    with pytest.MonkeyPatch.context() as patch:  # the fallback teacher: as where none is installed
        patch.setattr(adapt, "committed_teacher", lambda: None)
        main([str(drive), "--out", str(out), "--checkpoint", str(tiny_checkpoint), "--minutes", "5", *QUICK])
    return out


def one_line_error(argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("road-seg-adapt: ") and "\n" not in message
    return message


def test_a_tiny_bag_adapts_to_a_loadable_checkpoint_and_a_report(adapted, tiny_checkpoint):
    info = read_info(adapted / "adapted.safetensors")
    assert info.arch == read_info(tiny_checkpoint).arch and info.training["steps"] == 3
    engine = cpu_engine(adapted / "adapted.safetensors")  # loads like any checkpoint, in the node's engine
    assert engine.segment(np.zeros((120, 160, 3), np.uint8)).labels.shape == (120, 160)
    report = json.loads((adapted / "report.json").read_text())
    assert report["frames"] == {"sampled": FRAMES, "adapted": 10, "held_out": 2}
    assert "base student itself" in report["teacher"]
    for when in ("before", "after"):
        assert 0.0 <= report["held_out"][when]["teacher_agreement"] <= 100.0
        assert "miou" not in report["held_out"][when]  # no --gt-topic: no ground truth read
    assert (adapted / "mosaic.png").stat().st_size > 0 and not (adapted / "state.pt").exists()
    assert "| after |" in (adapted / "report.md").read_text()


def test_asking_for_the_ground_truth_reads_it(drive, tiny_checkpoint, tmp_path):
    """The same bag with --gt-topic fails on its unreadable ground truth: proof the default path never read it."""
    message = one_line_error([drive, "--out", tmp_path, "--checkpoint", tiny_checkpoint,
                              "--gt-topic", bags.GROUND_TRUTH_TOPIC, *QUICK])  # fmt: skip
    assert "ground-truth encoding '32FC1'" in message
    assert not (tmp_path / "adapted.safetensors").exists()


def test_bad_inputs_are_one_line_and_leave_no_result(drive, tiny_checkpoint, tmp_path):
    imu = tmp_path / "imu"
    with bags.BagRecorder(imu) as recorder:
        recorder._guard(recorder._writer.add_connection, "/imu", "sensor_msgs/msg/Imu", typestore=bags.TYPESTORE)
    cases = {
        "no camera image topic": [imu],
        "topic /front/image is not an image topic": [drive, "--topic", "/front/image"],
        "adaptation needs at least 10": [drive, "--every", "3"],
        "--minutes 0.0001 is too small": [drive, "--minutes", "0.0001"],
        "no unfinished run": [drive, "--resume"],
        "larger than the model's input": [drive, "--crop-size", "2048", "2048"],
    }
    for words, argv in cases.items():
        out = tmp_path / words.split()[0].strip("-")
        assert words in one_line_error([*argv, "--out", out, "--checkpoint", tiny_checkpoint, *QUICK])
        assert not (out / "adapted.safetensors").exists()


def test_the_shipped_teacher_is_the_default_with_multi_scale_and_flip(monkeypatch, tiny_checkpoint):
    monkeypatch.setattr(adapt, "committed_teacher", committed_teacher)
    paths, scales, text = choose_teacher([], tiny_checkpoint)
    assert paths == [adapt.share_folders("models")[0] / "teacher.safetensors"]
    assert scales == TEACHER_SCALES and text.startswith("the shipped teacher (models/teacher.safetensors)")
    info = read_info(paths[0])
    assert info.arch["encoder"] == "efficientnet_lite2" and info.class_names == read_info(tiny_checkpoint).class_names


def test_without_a_teacher_the_base_student_teaches_itself(monkeypatch, tiny_checkpoint):
    paths, scales, text = choose_teacher([], tiny_checkpoint)
    assert paths == [tiny_checkpoint] and "no teacher is installed" in text


def test_the_labeled_batches_can_leave_the_adapted_drive_out():
    """A development loop adapts to a CamVid training drive as to a new one: its labels never enter the mix."""
    args = SimpleNamespace(data=None, source_split="train+val-0006R0", source_limit=None)
    dataset, weights = adapt.source_dataset(args, (64, 96), seed=0)
    assert len(dataset) == 367 + 101 - 101 and not any(s.name.startswith("0006R0_") for s in dataset.samples)
    assert weights.shape == (11,)


def test_several_teachers_are_averaged(drive, tiny_checkpoint, tmp_path):
    main([str(drive), "--out", str(tmp_path), "--checkpoint", str(tiny_checkpoint),
          "--teacher", str(tiny_checkpoint), str(tiny_checkpoint), *QUICK])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["teacher"].startswith(f"--teacher {tiny_checkpoint} {tiny_checkpoint} (multi-scale")
    # The base student is the teacher here, twice: before adapting, it agrees with its own averaged views closely.
    assert report["held_out"]["before"]["teacher_agreement"] > 50.0


def test_an_existing_result_is_not_overwritten(adapted, drive, tiny_checkpoint):
    assert "exists already" in one_line_error([drive, "--out", adapted, "--checkpoint", tiny_checkpoint, *QUICK])


def test_the_loop_state_resumes_exactly(tiny_checkpoint, monkeypatch):
    def loop():
        student, info = load_checkpoint(tiny_checkpoint)
        frames = torch.randint(0, 256, (4, 3, 96, 128), dtype=torch.uint8)
        probabilities = torch.softmax(torch.randn(4, 11, 96, 128), dim=1)
        defaults = SelfTrainingSettings()
        augmentation = dataclasses.replace(defaults.augmentation, crop_size=(64, 96))
        settings = dataclasses.replace(defaults, target_batch=2, augmentation=augmentation)
        return SelfTraining(student, frames, probabilities, None, None, info, 60.0, settings, torch.device("cpu"))

    clock = [1000.0]
    monkeypatch.setattr(optim, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    first = loop()
    first.step()
    clock[0] += 5.0  # the first run spends 5 s of its budget
    state = first.state_dict()
    clock[0] += 3600.0  # the second run starts an hour later: that hour is not spent budget
    second = loop()
    second.load_state_dict(state)
    assert second.steps == 1
    assert state["elapsed_seconds"] == 5.0 and second.schedule.elapsed() == 5.0
    assert second.scheduler.last_epoch == first.scheduler.last_epoch
    for name, value in first.ema.module.state_dict().items():
        assert torch.equal(value, second.ema.module.state_dict()[name]), name


def test_a_student_that_equals_its_teacher_has_no_distillation_loss():
    # The teacher comes as probabilities (averaged views); a student whose logits give the same probabilities
    # has nothing to learn, whatever per-pixel offset its logits carry. CWD on raw logits did not see that.
    logits = 3.0 * torch.randn(2, 11, 24, 32) + 5.0 * torch.randn(2, 1, 24, 32)
    losses = distillation_losses(SelfTrainingSettings().distillation, logits, torch.softmax(logits, dim=1).half())
    assert set(losses) == {"kd_pixel", "kd_cwd"}
    for name, loss in losses.items():
        assert float(loss) == pytest.approx(0.0, abs=2e-3), name
    other = distillation_losses(SelfTrainingSettings().distillation, torch.randn_like(logits), torch.softmax(logits, 1))
    assert all(float(loss) > 0.05 for loss in other.values())


def test_crops_at_the_input_size_never_zoom_out_into_padding():
    settings = SelfTrainingSettings()
    assert with_crop(settings, (360, 480), (256, 320)).augmentation.scale_range == (0.75, 1.5)
    full = with_crop(settings, (360, 480), (360, 480)).augmentation
    assert full.crop_size == (360, 480) and full.scale_range == (1.0, 1.5)
    with pytest.raises(ValueError, match="larger than the model's input"):
        with_crop(settings, (360, 480), (400, 480))


def test_the_result_moves_base_weight_of_the_way_back_to_the_base(tiny_checkpoint):
    student, info = load_checkpoint(tiny_checkpoint)
    base = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    frames = torch.randint(0, 256, (4, 3, 96, 128), dtype=torch.uint8)
    probabilities = torch.softmax(torch.randn(4, 11, 96, 128), dim=1)
    defaults = SelfTrainingSettings(base_weight=0.25, target_batch=2)
    crops = dataclasses.replace(defaults.augmentation, crop_size=(64, 96))
    settings = dataclasses.replace(defaults, augmentation=crops)
    loop = SelfTraining(student, frames, probabilities, None, None, info, 60.0, settings, torch.device("cpu"))
    for _ in range(3):
        loop.step()
    average = {name: tensor.clone() for name, tensor in loop.ema.module.state_dict().items()}
    result = loop.adapted_model().state_dict()
    moved = [name for name, v in average.items() if v.is_floating_point() and not torch.equal(v, base[name])]
    assert moved  # three steps changed the average
    for name in moved:
        assert torch.allclose(result[name], 0.75 * average[name] + 0.25 * base[name], atol=1e-6), name
