"""``road-seg-eval``: mIoU, per-class IoU, pixel accuracy, params, GFLOPs and FPS on a CamVid split.

    road-seg-eval --data ../shared/camvid --split test --json out/test.json

Single-scale evaluation runs through the SegmentationEngine with the node's
own defaults (device, backend, precision), so it measures exactly what the
node runs; ``--scales``/``--flip`` (test-time augmentation, for the teacher)
run the network directly. One confusion matrix over the whole split.
"""

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..core.checkpoint import CheckpointError
from ..core.cli import add_engine_arguments, engine_options, exit_with, positive_number, whole_number
from ..core.engine import SegmentationEngine
from ..core.options import EngineError
from .data import SPLIT_HELP, DataError, load_label, load_rgb, read_split, split_argument
from .flops import count_gflops, count_params
from .metrics import ConfusionMatrix, format_iou_table

SCALE_RANGE = (0.25, 4.0)  # test-time scales: a quarter of a 360x480 input is still 88x120; 4x is 1440x1920


def evaluate_frames(predict, images, labels, on_prediction=None):
    """Runs ``predict(rgb) -> labels`` over frames; returns (ConfusionMatrix, seconds per frame list)."""
    confusion = ConfusionMatrix()
    seconds = []
    for index, (image, label) in enumerate(zip(images, labels)):
        started = time.perf_counter()
        prediction = predict(image)
        seconds.append(time.perf_counter() - started)
        confusion.update(prediction, label)
        if on_prediction is not None:
            on_prediction(index, prediction)
    return confusion, seconds


class MultiScalePredictor:
    """Averages softmax over models, scales and horizontal flips (non-real-time: for a teacher, or to evaluate one).

    ``engines``: one or more engines of the same input size and classes (an ensemble).
    """

    def __init__(self, engines: list, scales=(1.0,), flip=False):
        if len({(tuple(e.input_size), tuple(e.class_names)) for e in engines}) != 1:
            raise EngineError("the ensemble's models differ in input size or classes")
        self.engines, self.scales, self.flip = engines, scales, flip

    @torch.inference_mode()
    def probabilities(self, rgb) -> torch.Tensor:
        """1 x classes x h x w mean class probabilities at the models' input size (h x w)."""
        total = 0
        for engine in self.engines:
            batch = engine.preprocess(rgb)
            height, width = batch.shape[-2:]
            for scale in self.scales:
                size = (round(height * scale / 8) * 8, round(width * scale / 8) * 8)
                scaled = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
                views = [scaled, scaled.flip(3)] if self.flip else [scaled]
                for index, view in enumerate(views):
                    logits = engine.model(view)["out"].float()
                    logits = logits.flip(3) if index == 1 else logits
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                    total = total + logits.softmax(1)
        return total / (len(self.engines) * len(self.scales) * (2 if self.flip else 1))

    def __call__(self, rgb) -> np.ndarray:
        labels = self.probabilities(rgb).argmax(1)[0].to(torch.uint8).cpu().numpy()
        if labels.shape != rgb.shape[:2]:
            labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        return labels


def aspect_ratio(text: str) -> float:
    """``W:H`` (e.g. 16:9) as W / H, for argparse's ``type``."""
    try:
        width, height = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"aspect must be W:H, e.g. 16:9, got {text!r}") from None
    if not (width > 0 and height > 0):
        raise argparse.ArgumentTypeError(f"aspect must be W:H with both positive, got {text!r}")
    return width / height


def middle_rows(image: np.ndarray, aspect: float) -> np.ndarray:
    """The frame's middle rows at ``aspect`` (width / height), as a wider camera would see the scene; the frame
    itself where it is already that wide."""
    height, width = image.shape[:2]
    rows = min(height, round(width / aspect))
    top = (height - rows) // 2
    return image[top : top + rows]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-eval", description=__doc__.split("\n\n")[0])
    add_engine_arguments(parser)
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument(
        "--split",
        default="val",
        type=split_argument,
        help=SPLIT_HELP,
    )
    parser.add_argument(
        "--scales",
        type=positive_number,
        nargs="+",
        help=f"multi-scale test-time augmentation, e.g. 0.75 1 1.25 (each {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g})",
    )
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped views")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="CKPT",
        help="more checkpoints whose class probabilities are averaged with --checkpoint's (non-real-time)",
    )
    parser.add_argument("--limit", type=whole_number(1), metavar="N", help="only the first N frames of the split")
    parser.add_argument(
        "--crop-aspect",
        type=aspect_ratio,
        metavar="W:H",
        help="score each frame's middle rows at this aspect ratio (e.g. 16:9), its labels cropped alike",
    )
    parser.add_argument("--save-predictions", type=Path, metavar="DIR", help="one uint8 label PNG per frame")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.json is not None and args.json.is_dir():
        parser.error(f"--json {args.json} is a directory; give a file name")
    for scale in args.scales or ():
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            parser.error(f"--scales: each must be {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}, got {scale:g}")
    return args


def evaluate_from_args(args) -> dict:
    options = engine_options(args)
    averaged = bool(args.scales or args.flip or args.ensemble)
    if averaged:
        options = options.with_changes(backend="torch")  # averaging runs the PyTorch network itself
    engine = SegmentationEngine(options)
    samples = read_split(args.data, args.split)[: args.limit]
    images = [load_rgb(s.image) for s in samples]
    labels = [load_label(s.label) for s in samples]
    if args.crop_aspect:
        images = [middle_rows(image, args.crop_aspect) for image in images]
        labels = [middle_rows(label, args.crop_aspect) for label in labels]
    if averaged:
        others = [SegmentationEngine(options.with_changes(checkpoint=path)) for path in args.ensemble]
        predict = MultiScalePredictor([engine, *others], tuple(args.scales or (1.0,)), args.flip)
    else:
        engine.segment(images[0])  # warm-up, so the FPS is the steady state
        predict = lambda rgb: engine.segment(rgb).labels  # noqa: E731

    if args.save_predictions:
        args.save_predictions.mkdir(parents=True, exist_ok=True)

    def save(index, prediction):
        if args.save_predictions:
            cv2.imwrite(str(args.save_predictions / f"{samples[index].name}.png"), prediction)

    confusion, seconds = evaluate_frames(predict, images, labels, save)
    height, width = engine.input_size
    result = {
        "checkpoint": str(engine.checkpoint),
        "split": args.split,
        "frames": len(samples),
        **confusion.summary(engine.class_names),
        "params_millions": count_params(engine.model) / 1e6,
        "gflops": {f"{height}x{width}": count_gflops(engine.model, (height, width), engine.device, engine.dtype)},
        "fps": 1.0 / float(np.median(seconds)),
        "device": str(engine.device),
        "backend": engine.backend,
        "precision": engine.precision,
        "test_time_augmentation": {"scales": args.scales or [1.0], "flip": args.flip},
        "keep_aspect": engine.keep_aspect,
        "crop_aspect": args.crop_aspect,
        "ensemble": [str(engine.checkpoint), *args.ensemble] if args.ensemble else [],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def main(argv=None):
    args = parse_args(argv)
    try:
        result = evaluate_from_args(args)
    except (CheckpointError, DataError, EngineError, OSError) as error:
        exit_with("road-seg-eval", error)
    print(format_iou_table(result))
    gflops = ", ".join(f"{v:.2f} at {k}" for k, v in result["gflops"].items())
    print(
        f"\n{result['frames']} frames of {result['split']}: mIoU {result['miou']:.2f}%, "
        f"pixel accuracy {result['pixel_accuracy']:.2f}%, params {result['params_millions']:.3f} M, "
        f"GFLOPs {gflops}, {result['fps']:.1f} FPS ({result['device']}, {result['backend']}, {result['precision']}, "
        "batch 1)"
    )


if __name__ == "__main__":
    main()
