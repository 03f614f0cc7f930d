"""``road-seg-make-bag``: a CamVid drive as a rosbag2 camera recording with its ground truth.

    road-seg-make-bag --data ../shared/camvid --split test --drive Seq05VD --out bags/seq05vd --transport compressed
    road-seg-make-bag --drive Seq05VD --start 1 --every 2 --no-ground-truth --out seq05vd_odd.mcap   # unlabeled

Frames go out in time order on /camera/image_raw (rgb8) or
/camera/image_raw/compressed (jpeg), with /camera/camera_info and the labels
as /camera/ground_truth (mono8 class ids), all stamped alike, frame_id camera.
An ``--out`` ending in .mcap writes one MCAP file instead of a bag directory.
"""

import argparse

from ..core.cli import exit_with, positive_number, whole_number
from ..core.codec import JPEG_QUALITY
from ..training.data import SPLITS, DataError, load_label, load_rgb, read_split
from .bags import STORAGES, BagError, write_camera_bag

TRANSPORT_ENCODINGS = {"raw": "rgb8", "compressed": "jpeg"}
DEFAULT_RATE_HZ = 1.0  # CamVid's labelled frames are 1 Hz samples of the 30 Hz video


def drive_samples(root, split: str, drive: str, limit=None):
    """The samples of one drive of a split in time order; ``limit`` keeps the first N."""
    samples = read_split(root, split)
    drives = sorted({s.name.split("_")[0] for s in samples})
    chosen = [s for s in samples if s.name.split("_")[0] == drive][:limit]
    if not chosen:
        raise DataError(f"no drive {drive!r} in the {split} split (drives there: {', '.join(drives)})")
    return chosen


def make_bag(args) -> int:
    """Writes the chosen frames of the drive (with their ground truth unless told not to); returns how many."""
    samples = drive_samples(args.data, args.split, args.drive)[args.start :: args.every][: args.limit]
    if not samples:
        raise DataError(f"--start {args.start} --every {args.every} leaves no frame of {args.drive}")
    frames = ((load_rgb(s.image), load_label(s.label) if args.ground_truth else None) for s in samples)
    encoding = TRANSPORT_ENCODINGS[args.transport]
    return write_camera_bag(args.out, frames, args.storage, encoding, args.rate / args.every, JPEG_QUALITY)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-make-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--drive", required=True, help="frame-name prefix of the drive, e.g. Seq05VD or 0001TP")
    parser.add_argument("--out", required=True, help="bag directory to create, or a .mcap file")
    parser.add_argument("--storage", default="mcap", choices=STORAGES)
    parser.add_argument("--transport", default="raw", choices=tuple(TRANSPORT_ENCODINGS))
    parser.add_argument(
        "--rate", type=positive_number, default=DEFAULT_RATE_HZ, metavar="HZ", help="frame rate of the stamps"
    )
    parser.add_argument(
        "--start", type=whole_number(0), default=0, metavar="K", help="first frame, counting from 0 (default 0)"
    )
    parser.add_argument(
        "--every", type=whole_number(1), default=1, metavar="N", help="every N-th frame from --start (default 1)"
    )
    parser.add_argument("--limit", type=whole_number(1), metavar="N", help="at most N frames")
    parser.add_argument(
        "--no-ground-truth", dest="ground_truth", action="store_false", help="leave the labels out (unlabeled drive)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        count = make_bag(args)
    except (BagError, DataError) as error:
        exit_with("road-seg-make-bag", error)
    print(f"wrote {count} frames of {args.drive} ({args.split}) to {args.out}")


if __name__ == "__main__":
    main()
