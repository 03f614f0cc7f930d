"""One frame against a batch of N through the same engine (``road-seg-bench --batch N``, and the cameras bench)."""

import time

import numpy as np

from ..core.engine import SegmentationEngine

TARGET_BATCH_RATIO = 2.0  # a batch of 4 frames through the model costs under this many times one frame (GPU)
BATCH_REPS = 50  # at most, per call kind in batch_cost


def batch_cost(engine: SegmentationEngine, frames: list, warmup: int, reps: int) -> dict:
    """``engine`` on one frame against ``frames`` as one batch (``segment_batch``): inference and total p50 ms."""
    one, batch = {"inference": [], "total": []}, {"inference": [], "total": []}
    calls = ((one, lambda: [engine.segment(frames[0])]), (batch, lambda: engine.segment_batch(frames)))
    for rep in range(warmup + reps):
        for timings, call in calls:
            started = time.perf_counter()
            measured = call()[0].timings_ms["inference"]
            if rep >= warmup:
                timings["inference"].append(measured)
                timings["total"].append((time.perf_counter() - started) * 1000.0)
    one, batch = ({key: float(np.percentile(v, 50)) for key, v in t.items()} for t in (one, batch))
    return {
        "device": str(engine.device),
        "backend": engine.backend,
        "precision": engine.precision,
        "frames": len(frames),
        "one_frame_ms": one,
        "batch_ms": batch,
        "ratio": {key: batch[key] / one[key] for key in one},
    }


def batch_sentence(cost: dict) -> str:
    """One line on what a batch costs against one frame."""
    count, one, batch, ratio = cost["frames"], cost["one_frame_ms"], cost["batch_ms"], cost["ratio"]
    return (
        f"{cost['backend']} {cost['precision']} on {cost['device']}, p50: one frame {one['inference']:.1f} ms "
        f"inference ({one['total']:.1f} ms end to end); a batch of {count} {batch['inference']:.1f} ms "
        f"({batch['total']:.1f} ms): {ratio['inference']:.2f}x one frame ({ratio['total']:.2f}x), "
        f"{ratio['inference'] / count:.2f}x {count} frames one by one ({ratio['total'] / count:.2f}x)."
    )


def batch_target_line(cost: dict, size: str) -> str:
    ratio = cost["ratio"]["inference"]
    return (
        f"- {size}: batched inference of {cost['frames']} frames under {TARGET_BATCH_RATIO:g}x one frame on "
        f"{cost['device']}: {ratio:.2f}x, {'met' if ratio < TARGET_BATCH_RATIO else 'missed'}."
    )
