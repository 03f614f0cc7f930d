"""The evaluator's saved predictions and its JSON agree; bad input exits with one line."""

import json

import cv2
import numpy as np
import pytest

from road_seg_ros.core.cli import engine_options
from road_seg_ros.core.engine import SegmentationEngine
from road_seg_ros.core.options import default_checkpoint
from road_seg_ros.ros.params import PARAMETERS_BY_NAME
from road_seg_ros.training.data import load_label, read_split
from road_seg_ros.training.evaluate import main, parse_args
from road_seg_ros.training.metrics import ConfusionMatrix


def test_predictions_and_json_agree(tmp_path, capsys):
    predictions, report = tmp_path / "pred", tmp_path / "val.json"
    main(["--split", "val", "--limit", "3", "--device", "cpu", "--save-predictions", str(predictions),
          "--json", str(report)])  # fmt: skip
    result = json.loads(report.read_text())
    assert "mIoU" in capsys.readouterr().out
    confusion = ConfusionMatrix()
    for sample in read_split(None, "val")[:3]:
        predicted = cv2.imread(str(predictions / f"{sample.name}.png"), cv2.IMREAD_UNCHANGED)
        assert predicted.dtype == np.uint8 and predicted.shape == (360, 480) and predicted.max() <= 10
        confusion.update(predicted, load_label(sample.label))
    assert result["frames"] == 3
    assert result["miou"] == pytest.approx(100 * confusion.miou(), abs=1e-9)
    assert set(result["per_class_iou"]) == {"sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol",
                                            "fence", "car", "pedestrian", "bicyclist"}  # fmt: skip
    assert result["params_millions"] > 0 and result["gflops"]["360x480"] > 0 and result["fps"] > 0


@pytest.mark.parametrize("keep_aspect, input_size", [("--keep-aspect", (360, 640)), ("--no-keep-aspect", (360, 480))])
def test_a_16_9_crop_is_scored_on_the_middle_rows_of_frame_and_label(tmp_path, keep_aspect, input_size):
    """--crop-aspect 16:9: the middle 270 of 360 rows, predictions at that size; with --keep-aspect the model runs
    at 360x640, so the labels differ from the stretched run's (which runs at 360x480) only through the model."""
    predictions, report = tmp_path / "pred", tmp_path / "wide.json"
    main(["--split", "val", "--limit", "2", "--device", "cpu", "--backend", "torch", "--crop-aspect", "16:9",
          keep_aspect, "--save-predictions", str(predictions), "--json", str(report)])  # fmt: skip
    result = json.loads(report.read_text())
    assert result["crop_aspect"] == pytest.approx(16 / 9) and result["keep_aspect"] == (keep_aspect == "--keep-aspect")
    confusion = ConfusionMatrix()
    for sample in read_split(None, "val")[:2]:
        predicted = cv2.imread(str(predictions / f"{sample.name}.png"), cv2.IMREAD_UNCHANGED)
        assert predicted.shape == (270, 480)
        confusion.update(predicted, load_label(sample.label)[45:315])
    assert result["miou"] == pytest.approx(100 * confusion.miou(), abs=1e-9)
    engine = SegmentationEngine(engine_options(parse_args(["--device", "cpu", keep_aspect])))
    assert engine.input_size_for((270, 480)) == input_size


def test_multiscale_flip_runs(tmp_path):
    report = tmp_path / "tta.json"
    main(["--split", "val", "--limit", "1", "--device", "cpu", "--scales", "0.75", "1.0", "--flip",
          "--json", str(report)])  # fmt: skip
    assert json.loads(report.read_text())["test_time_augmentation"] == {"scales": [0.75, 1.0], "flip": True}


def test_an_ensemble_of_one_model_twice_predicts_as_the_model(tmp_path, tiny_checkpoint):
    """Averaging a model's probabilities with themselves changes no label; models of another input size are refused."""
    shipped = str(default_checkpoint())
    common = ["--split", "val", "--limit", "2", "--device", "cpu", "--scales", "1"]
    main([*common, "--save-predictions", str(tmp_path / "one")])
    main(
        [
            *common,
            "--ensemble",
            shipped,
            "--save-predictions",
            str(tmp_path / "two"),
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    saved = sorted((tmp_path / "one").iterdir())
    assert len(saved) == 2
    for single in saved:
        paired = tmp_path / "two" / single.name
        assert np.array_equal(
            cv2.imread(str(single), cv2.IMREAD_UNCHANGED), cv2.imread(str(paired), cv2.IMREAD_UNCHANGED)
        )
    assert json.loads((tmp_path / "e.json").read_text())["ensemble"][1] == shipped
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--ensemble", str(tiny_checkpoint)])
    assert "differ in input size or classes" in str(exit_info.value.code)


@pytest.mark.parametrize(
    "argv, reason",
    [(["--checkpoint", "/nonexistent.safetensors"], "checkpoint not found"), (["--data", "/nonexistent"], "no CamVid")],
)
def test_bad_input_exits_with_one_line(argv, reason):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cpu"])
    assert reason in str(exit_info.value.code)


def test_evaluator_defaults_are_the_nodes():
    """--backend (and device, precision) default to what road_seg_node runs, so eval measures the node's runtime."""
    args = parse_args([])
    for flag, name in (("backend", "backend"), ("device", "device"), ("precision", "precision")):
        assert getattr(args, flag) == PARAMETERS_BY_NAME[name].default


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--limit", "0"], "must be at least 1"),
        (["--limit", "x"], "whole number"),
        (["--json", "."], "is a directory"),
        (["--scales", "1", "nan"], "must be a positive number, got nan"),
        (["--scales", "0.01"], "each must be 0.25..4, got 0.01"),
        (["--threads", "-1"], "must be at least 0, got -1"),
        (["--crop-aspect", "16x9"], "aspect must be W:H"),
        (["--device", "gpu0"], "or cuda:N (a GPU by its index), got 'gpu0'"),
        (["--crop-aspect", "0:9"], "both positive"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_malformed_split_list_is_one_line(tmp_path):
    (tmp_path / "train.txt").write_text("a.png b.png\n")
    (tmp_path / "val.txt").write_text("only-one-column\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), "--split", "val", "--device", "cpu"])
    assert "val.txt:1: expected 'image label'" in str(exit_info.value.code)
    (tmp_path / "val.txt").write_text("\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), "--split", "val", "--device", "cpu"])
    assert "names no frames" in str(exit_info.value.code)
