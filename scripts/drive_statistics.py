"""A checkpoint whose input normalisation maps a drive's colour statistics onto its training frames'.

    python scripts/drive_statistics.py BAG CHECKPOINT --source-split train+val-0006R0 --out OUT.safetensors

Reads the bag's frames (no labels) and the CamVid split the checkpoint trained on, and writes CHECKPOINT with
``mean`` and ``std`` changed so that each channel of the drive, normalised, has the mean and spread the training
frames had: no weight changes. A measurement for docs/results.md (IS, "Adaptation to an unlabeled drive").
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from road_seg_ros.tools.bags import CameraBag  # noqa: E402
from road_seg_ros.training.data import camvid_root, load_rgb, read_split  # noqa: E402


def channel_statistics(frames) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of RGB uint8 frames, in [0, 1] units."""
    pixels = np.concatenate([frame.reshape(-1, 3) for frame in frames]).astype(np.float64) / 255.0
    return pixels.mean(0), pixels.std(0)


def matched_normalisation(mean, std, drive, training) -> tuple[list, list]:
    """``(mean, std)`` such that (x - mean) / std of a drive pixel x equals the original normalisation of x
    moved channel by channel from the drive's statistics onto the training frames'."""
    (drive_mean, drive_std), (train_mean, train_std) = drive, training
    ratio = drive_std / train_std
    return list(drive_mean - (train_mean - np.asarray(mean)) * ratio), list(np.asarray(std) * ratio)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag")
    parser.add_argument("checkpoint")
    parser.add_argument("--source-split", default="train")
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with CameraBag(args.bag, None, None, ground_truth=False) as bag:
        drive = channel_statistics(frame.rgb for frame in bag.frames())
    training = channel_statistics(load_rgb(s.image) for s in read_split(camvid_root(args.data), args.source_split))
    model, info = load_checkpoint(args.checkpoint)
    info.mean, info.std = (
        list(map(float, values)) for values in matched_normalisation(info.mean, info.std, drive, training)
    )
    save_checkpoint(args.out, model, info)
    rounded = {
        name: np.round(values, 3).tolist()
        for name, values in (
            ("drive mean", drive[0]),
            ("drive std", drive[1]),
            ("training mean", training[0]),
            ("training std", training[1]),
            ("new mean", info.mean),
            ("new std", info.std),
        )
    }
    print(f"{rounded}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
