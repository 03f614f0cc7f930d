"""``road-seg-adapt``: adapt the student to your own roads from an unlabeled camera bag.

    road-seg-adapt my_drive.mcap --out runs/adapted
    ros2 launch road_seg_ros road_seg.launch.py model_path:=runs/adapted/adapted.safetensors

A high-accuracy, non-real-time teacher labels the bag's frames (soft class
probabilities); the real-time student is fine-tuned on them within a
wall-clock budget (see training/self_training.py), mixed with labeled CamVid
batches so it does not forget. Every few sampled frames are held out: the
report compares the student before and after on them, against the teacher
and, with ``--gt-topic``, against ground truth. Only ``--gt-topic`` makes the
tool read any ground truth.

DIR gets adapted.safetensors (a checkpoint like any other), report.md,
report.json and mosaic.png; state.pt lets ``--resume`` continue a run.
"""

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..core.backends import resolve_device
from ..core.checkpoint import CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
from ..core.cli import exit_with, positive_number, whole_number
from ..core.engine import SegmentationEngine
from ..core.files import written_whole
from ..core.labels import color_table
from ..core.options import DEVICES, EngineError, EngineOptions, default_checkpoint
from ..core.resources import share_folders
from ..training.augment import Augmentation, TrainAugmentation
from ..training.config import TrainConfig
from ..training.data import SPLIT_HELP, CamVid, DataError, class_weights, split_argument
from ..training.evaluate import MultiScalePredictor
from ..training.metrics import ConfusionMatrix
from ..training.self_training import SelfTraining, SelfTrainingSettings, resized_for_model, with_crop
from .bags import BagError, CameraBag
from .replay_report import mosaic, overlay_tile

DEFAULT_MINUTES = 15.0  # about 85 frames on a 2-core CPU (docs/results.md)
TEACHER_SCALES = (0.75, 1.0, 1.25, 1.5)  # the teacher's views of each frame, each also flipped
MIN_ADAPT_FRAMES = 8
MIN_HELD_OUT = 2
MIN_STEPS = 10  # a budget that cannot fit this many steps is refused before anything is written
STATE_PERIOD_S = 60.0
MOSAIC_FRAMES = 4
RESULT = "adapted.safetensors"


class AdaptError(RuntimeError):
    """The adaptation cannot run as asked; the message is one line."""


def committed_teacher() -> Path | None:
    """The teacher shipped beside the student (models/teacher.safetensors), if installed."""
    for folder in share_folders("models"):
        if (folder / "teacher.safetensors").is_file():
            return folder / "teacher.safetensors"
    return None


def choose_teacher(teachers: list, base: Path) -> tuple[list[Path], tuple, str]:
    """``--teacher`` (one, or several averaged), else the shipped teacher, else the base student; the scales
    its views are taken at, each also flipped (both teachers are cheap enough for it, and it scores higher on
    val: docs/results.md); and how the report names it."""
    committed = None if teachers else committed_teacher()
    if teachers:
        paths, name = [Path(t) for t in teachers], f"--teacher {' '.join(teachers)}"
    elif committed is not None:
        paths, name = [committed], "the shipped teacher (models/teacher.safetensors)"
    else:
        paths, name = [base], "the base student itself: no teacher is installed"
    views = "/".join(f"{scale:g}" for scale in TEACHER_SCALES)
    return paths, TEACHER_SCALES, f"{name} (multi-scale {views} + flip)"


def make_teacher(teachers: list, base: Path, info: ModelInfo, device: str) -> tuple[MultiScalePredictor, str]:
    """The teacher ``choose_teacher`` picks, run at the student's input size (the views it learns from), and
    its name for the report."""
    paths, scales, text = choose_teacher(teachers, base)
    options = EngineOptions(device=device, backend="torch", input_size=tuple(info.input_size))
    engines = [SegmentationEngine(options.with_changes(checkpoint=str(path))) for path in paths]
    for path, engine in zip(paths, engines):
        if engine.info.class_names != info.class_names:
            raise AdaptError(f"teacher {path} and student {base} have different classes")
    return MultiScalePredictor(engines, scales, flip=True), text


def read_frames(args) -> list:
    """Every ``--every``-th frame of the bag (with ground truth only when ``--gt-topic`` is given)."""
    with CameraBag(args.bag, args.topic, args.gt_topic, ground_truth=args.gt_topic is not None) as bag:
        frames = [frame for index, frame in enumerate(bag.frames()) if index % args.every == 0]
        topic = bag.topic
    needed = MIN_ADAPT_FRAMES + MIN_HELD_OUT
    if len(frames) < needed:
        raise AdaptError(
            f"{args.bag} gives {len(frames)} frames on {topic} with --every {args.every}; "
            f"adaptation needs at least {needed}"
        )
    return frames


def split_frames(frames: list, held_out_every: int) -> tuple[list, list]:
    """(adaptation frames, held-out frames): one frame in ``held_out_every`` (at least two), spread evenly."""
    count = max(MIN_HELD_OUT, len(frames) // held_out_every)
    chosen = set(np.linspace(0, len(frames) - 1, count + 2)[1:-1].round().astype(int).tolist())
    adapted = [frame for index, frame in enumerate(frames) if index not in chosen]
    return adapted, [frames[index] for index in sorted(chosen)]


def teacher_probabilities(predictor: MultiScalePredictor, frames, progress: bool) -> torch.Tensor:
    """N x C x h x w half-precision class probabilities at the model's input size."""
    rows = [
        predictor.probabilities(frame.rgb).half().cpu() for frame in tqdm(frames, desc="teacher", disable=not progress)
    ]
    return torch.cat(rows)


def source_dataset(args, crop_size, seed: int) -> tuple[CamVid, torch.Tensor]:
    """CamVid's --source-split (train) with the training recipe's CPU augmentation at ``crop_size``, and its class
    weights."""
    settings = Augmentation.from_config(TrainConfig(crop_size=tuple(crop_size)))
    dataset = CamVid(
        args.data, args.source_split, transform=TrainAugmentation(settings, seed=seed), limit=args.source_limit
    )
    return dataset, class_weights(dataset.labels)


def adapt(args) -> dict:
    started = time.perf_counter()
    out = Path(args.out)
    if (out / RESULT).exists() and not args.resume:
        raise AdaptError(f"{out / RESULT} exists already; choose another --out (or --resume an unfinished run)")
    if args.resume and not (out / "state.pt").is_file():
        raise AdaptError(f"--resume: no unfinished run in {out} (no state.pt)")
    device = resolve_device(args.device, backend="torch")
    frames = read_frames(args)
    adapt_frames, held_out = split_frames(frames, args.held_out_every)
    base = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    student, info = load_checkpoint(base)
    predictor, teacher_text = make_teacher(args.teacher, base, info, device.type)
    probabilities = teacher_probabilities(predictor, adapt_frames, args.progress)
    held_out_teacher = [predictor(frame.rgb) for frame in held_out]
    teacher_seconds = time.perf_counter() - started

    settings = SelfTrainingSettings(source_weight=args.source_weight, base_weight=args.base_weight)
    try:
        settings = with_crop(settings, info.input_size, args.crop_size)
    except ValueError as error:
        raise AdaptError(f"--crop-size: {error}") from None
    crop_size = settings.augmentation.crop_size
    source, weight = source_dataset(args, crop_size, args.seed) if args.source_weight else (None, None)
    frames_tensor = torch.stack([resized_for_model(frame.rgb, info.input_size) for frame in adapt_frames])
    loop = SelfTraining(student, frames_tensor, probabilities, source, weight, info, 60.0 * args.minutes, settings,
                        device, args.seed)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        loop.load_state_dict(torch.load(out / "state.pt", map_location=device, weights_only=True))
    history = run_budget(loop, out, args)
    adapted = loop.adapted_model()
    description = f"{info.description or base.name}, adapted to {Path(args.bag).name} without labels"
    training = {"adapted_from": str(base), "bag": str(args.bag), "teacher": teacher_text, "steps": loop.steps,
                "frames": len(adapt_frames), "minutes": args.minutes, "crop_size": list(crop_size),
                "base_weight": args.base_weight, "source_split": args.source_split}  # fmt: skip
    adapted_info = ModelInfo(**{**info.__dict__, "description": description, "training": training})
    save_checkpoint(out / RESULT, adapted, adapted_info)
    (out / "state.pt").unlink(missing_ok=True)  # finished: nothing left to resume
    context = {
        "bag": str(args.bag),
        "base": str(base),
        "teacher": teacher_text,
        "frames": {"sampled": len(frames), "adapted": len(adapt_frames), "held_out": len(held_out)},
        "every": args.every,
        "source_split": args.source_split,
        "budget_minutes": args.minutes,
        "steps": loop.steps,
        "seconds": {"teacher": teacher_seconds, "total": time.perf_counter() - started},
        "final_losses": history[-1] if history else {},
    }
    return write_report(out, context, base, held_out, held_out_teacher, device)


def run_budget(loop: SelfTraining, out: Path, args) -> list:
    """Steps until the budget (or ``--max-steps``) is spent; the state is saved every minute for ``--resume``."""
    first = time.perf_counter()
    history = [loop.step()]
    step_seconds = time.perf_counter() - first
    if not args.resume and step_seconds * MIN_STEPS > 60.0 * args.minutes:
        raise AdaptError(
            f"--minutes {args.minutes:g} is too small: {MIN_STEPS} steps take about "
            f"{step_seconds * MIN_STEPS / 60:.1f} min here"
        )
    saved = time.perf_counter()
    bar = tqdm(total=round(60.0 * args.minutes), unit="s", desc="adapting", disable=not args.progress)
    while not loop.budget_spent() and (args.max_steps is None or loop.steps < args.max_steps):
        history.append(loop.step())
        bar.n = min(bar.total, round(loop.schedule.elapsed()))
        bar.set_postfix(step=loop.steps, **{name: f"{value:.3f}" for name, value in history[-1].items()})
        if time.perf_counter() - saved > STATE_PERIOD_S:
            _save_state(loop, out)
            saved = time.perf_counter()
    bar.close()
    return history


def _save_state(loop: SelfTraining, out: Path) -> None:
    with written_whole(out / "state.pt") as temporary:
        torch.save(loop.state_dict(), temporary)


def write_report(out: Path, context: dict, base: Path, held_out, teacher_labels, device) -> dict:
    """Before/after on the held-out frames: agreement with the teacher, mIoU with ground truth if read."""
    models = {"before": base, "after": out / RESULT}
    predictions = {}
    for name, path in models.items():
        engine = SegmentationEngine(EngineOptions(checkpoint=str(path), device=device.type, backend="torch"))
        predictions[name] = [engine.segment(frame.rgb).labels for frame in held_out]
    names = engine.class_names
    results = {}
    for name, labels in predictions.items():
        agreement = np.mean([np.mean(a == t) for a, t in zip(labels, teacher_labels)])
        results[name] = {"teacher_agreement": 100.0 * float(agreement)}
        truths = [(pred, frame.ground_truth) for pred, frame in zip(labels, held_out) if frame.ground_truth is not None]
        if truths:
            confusion = ConfusionMatrix(num_classes=len(names))
            for pred, truth in truths:
                confusion.update(pred, truth)
            results[name].update(confusion.summary(names))
    report = {**context, "held_out": results, "checkpoint": str(out / RESULT)}
    colors = color_table(engine.info.class_colors)  # the model's own classes, as its names above
    picks = np.linspace(0, len(held_out) - 1, min(MOSAIC_FRAMES, len(held_out))).round().astype(int)
    tiles = []
    for index in picks:
        panels = [(predictions["before"][index], "before"), (predictions["after"][index], "after"),
                  (teacher_labels[index], "teacher")]  # fmt: skip
        if held_out[index].ground_truth is not None:
            panels.append((held_out[index].ground_truth, "ground truth"))
        tiles.append(overlay_tile(held_out[index].rgb, panels, colors))
    cv2.imwrite(str(out / "mosaic.png"), cv2.cvtColor(mosaic(tiles, columns=1), cv2.COLOR_RGB2BGR))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_markdown(report))
    return report


def format_markdown(report: dict) -> str:
    frames, results = report["frames"], report["held_out"]
    lines = [
        f"# Adaptation to `{report['bag']}`",
        "",
        f"Base `{report['base']}`; teacher: {report['teacher']}.",
        f"Frames: {frames['sampled']} sampled (every {report['every']}), {frames['adapted']} adapted, "
        f"{frames['held_out']} held out. Budget {report['budget_minutes']:g} min: {report['steps']} steps; "
        f"teacher pass {report['seconds']['teacher']:.0f} s, total {report['seconds']['total']:.0f} s.",
        "",
        "| held-out frames | agreement with the teacher (%) | mIoU (%) |",
        "| --- | ---: | ---: |",
    ]
    for name in ("before", "after"):
        miou = results[name].get("miou")
        lines.append(
            f"| {name} | {results[name]['teacher_agreement']:.2f} | {'n/a' if miou is None else f'{miou:.2f}'} |"
        )
    lines += ["", f"Checkpoint: `{report['checkpoint']}`", "", "![before / after / teacher](mosaic.png)"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-adapt", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file of your camera (no labels needed)")
    parser.add_argument("--topic", help="image topic (default: /camera/image_raw[/compressed] or the only one)")
    parser.add_argument(
        "--every", type=whole_number(1), default=1, metavar="N", help="use every N-th frame (default: all)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for adapted.safetensors and the report")
    parser.add_argument(
        "--minutes", type=positive_number, default=DEFAULT_MINUTES, help="wall-clock budget of the fine-tune"
    )
    parser.add_argument("--checkpoint", help="the student to adapt (default: the shipped one)")
    parser.add_argument(
        "--teacher",
        nargs="+",
        default=[],
        metavar="CKPT",
        help="teacher checkpoint; several: their probabilities are averaged (default: the shipped "
        "teacher, models/teacher.safetensors, else the student)",
    )
    parser.add_argument("--gt-topic", help="ground-truth topic: adds before/after mIoU on the held-out frames")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument(
        "--data", help="CamVid root for the labeled batches (default: $CAMVID_ROOT or ../shared/camvid)"
    )
    parser.add_argument(
        "--source-weight", type=float, default=1.0, help="weight of the labeled CamVid batches (0: none)"
    )
    parser.add_argument(
        "--source-split",
        type=split_argument,
        default="train",
        help="the labeled CamVid frames mixed in: " + SPLIT_HELP + " (default: %(default)s); e.g. train+val-0006R0 "
        "to adapt to drive 0006R0 as to a drive never seen",
    )
    parser.add_argument(
        "--base-weight",
        type=float,
        default=SelfTrainingSettings.base_weight,
        metavar="W",
        help="share of the base's weights in the result, in [0, 1): more keeps more of what it knew "
        "(default: %(default)s)",
    )
    crop = SelfTrainingSettings.augmentation.crop_size
    parser.add_argument(
        "--crop-size",
        type=whole_number(32),
        nargs=2,
        metavar=("H", "W"),
        help=f"training crops, at most the model's input size (default: {crop[0]} {crop[1]}, or the input size "
        "where smaller)",
    )
    parser.add_argument(
        "--source-limit", type=whole_number(1), help=argparse.SUPPRESS
    )  # tests: fewer CamVid frames to load
    parser.add_argument(
        "--held-out-every", type=whole_number(2), default=8, metavar="K", help="hold out every K-th frame"
    )
    parser.add_argument("--max-steps", type=whole_number(1), metavar="N", help="stop after N steps (smoke runs)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    if not 0.0 <= args.source_weight < math.inf:
        parser.error(f"--source-weight must be 0 or more, got {args.source_weight}")
    if not 0.0 <= args.base_weight < 1.0:
        parser.error(f"--base-weight must be in [0, 1), got {args.base_weight}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        report = adapt(args)
    except (AdaptError, BagError, CheckpointError, EngineError, DataError, FloatingPointError, OSError) as error:
        exit_with("road-seg-adapt", error)
    except KeyboardInterrupt:
        exit_with("road-seg-adapt", f"interrupted; --resume continues from {args.out}/state.pt if saved")
    print(format_markdown(report).split("\n\n")[2])  # the before/after table
    print(f"adapted checkpoint: {report['checkpoint']}; report: {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
