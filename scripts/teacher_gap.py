"""How far a student is from road-seg-adapt's teacher on a bag (default: the one road-seg-adapt picks).

    python scripts/teacher_gap.py seq05vd_odd.mcap models/student.safetensors
    python scripts/teacher_gap.py seq05vd_even.mcap models/student.safetensors --gt-topic /camera/ground_truth

The default teacher is the committed GPU teacher (one scale + flip) since 2026-11-28; before, it was the
student itself with multi-scale + flip, which ``--teacher models/student.safetensors`` still measures.

Without labels: the distillation terms on a few frames, computed as the adaptation computes them now (both
sides floored log-probabilities) and as it did before (CWD on the student's raw logits). With --gt-topic:
the mIoU of the student and of the teacher on every frame, the most that distilling this teacher can give
(docs/results.md).
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.core.engine import SegmentationEngine  # noqa: E402
from road_seg_ros.core.options import EngineOptions  # noqa: E402
from road_seg_ros.tools.adapt import make_teacher  # noqa: E402
from road_seg_ros.tools.bags import CameraBag  # noqa: E402
from road_seg_ros.training.evaluate import evaluate_frames  # noqa: E402
from road_seg_ros.training.self_training import PROBABILITY_FLOOR, SelfTrainingSettings, distillation_losses  # noqa: E402


def student_and_teacher(checkpoint, teachers=()):
    """The student's engine, and the teacher road-seg-adapt would use with ``--teacher teachers``."""
    engine = SegmentationEngine(EngineOptions(checkpoint=str(checkpoint), device="cpu", backend="torch"))
    teacher, text = make_teacher([str(path) for path in teachers], Path(checkpoint), engine.info, "cpu")
    print(f"teacher: {text}")
    return engine, teacher


def distillation_terms(engine, teacher, frames) -> None:
    terms = SelfTrainingSettings().distillation
    with torch.no_grad():
        probabilities = torch.cat([teacher.probabilities(frame.rgb) for frame in frames])
        logits = torch.cat([engine.model(engine.preprocess(frame.rgb))["out"].float() for frame in frames])
        now = distillation_losses(terms, logits, probabilities)
        teacher_log = torch.log(probabilities.clamp_min(PROBABILITY_FLOOR))
        before = {f"kd_{term.name}": term(logits, teacher_log) for term in terms}
    print(f"{len(frames)} frames; weighted terms, as computed now / before (raw logits):")
    for name in now:
        print(f"  {name}: {float(now[name]):.3f} / {float(before[name]):.3f}")


def accuracy(engine, teacher, frames) -> None:
    images, truths = [frame.rgb for frame in frames], [frame.ground_truth for frame in frames]

    def miou(predict) -> float:
        return 100.0 * evaluate_frames(predict, images, truths)[0].miou()  # miou() is a fraction

    student, teacher = miou(lambda rgb: engine.segment(rgb).labels), miou(teacher)
    print(f"{len(frames)} frames; mIoU student {student:.2f}, teacher {teacher:.2f} ({teacher - student:+.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag")
    parser.add_argument("checkpoint")
    parser.add_argument("--teacher", nargs="+", default=[], metavar="CKPT", help="as road-seg-adapt's --teacher")
    parser.add_argument("--gt-topic", help="score student and teacher against this ground truth")
    parser.add_argument("--frames", type=int, default=8, help="without --gt-topic: every 5th frame, this many")
    args = parser.parse_args()
    engine, teacher = student_and_teacher(args.checkpoint, args.teacher)
    with CameraBag(args.bag, gt_topic=args.gt_topic, ground_truth=args.gt_topic is not None) as bag:
        frames = list(bag.frames())
    if args.gt_topic:
        accuracy(engine, teacher, frames)
    else:
        distillation_terms(engine, teacher, frames[: 5 * args.frames : 5])


if __name__ == "__main__":
    main()
