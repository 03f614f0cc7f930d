"""``road-seg-make-bag``: a CamVid drive as a rosbag2 camera recording with its ground truth.

    road-seg-make-bag --data ../shared/camvid --split test --drive Seq05VD --out bags/seq05vd --transport compressed

Frames go out in time order on /camera/image_raw (rgb8) or
/camera/image_raw/compressed (jpeg), with /camera/camera_info and the labels
as /camera/ground_truth (mono8 class ids), all stamped alike, frame_id camera.
An ``--out`` ending in .mcap writes one MCAP file instead of a bag directory.
"""

import argparse

from ..core.cli import exit_with
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


def make_bag(root, split, drive, out, storage="mcap", transport="raw", rate_hz=DEFAULT_RATE_HZ, limit=None) -> int:
    """Writes the drive's frames and ground truth to ``out``; returns the number of frames."""
    samples = drive_samples(root, split, drive, limit)
    frames = ((load_rgb(s.image), load_label(s.label)) for s in samples)
    return write_camera_bag(out, frames, storage, TRANSPORT_ENCODINGS[transport], rate_hz, JPEG_QUALITY)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="road-seg-make-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--drive", required=True, help="frame-name prefix of the drive, e.g. Seq05VD or 0001TP")
    parser.add_argument("--out", required=True, help="bag directory to create, or a .mcap file")
    parser.add_argument("--storage", default="mcap", choices=STORAGES)
    parser.add_argument("--transport", default="raw", choices=tuple(TRANSPORT_ENCODINGS))
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, metavar="HZ", help="frame rate of the stamps")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N frames of the drive")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        count = make_bag(
            args.data, args.split, args.drive, args.out, args.storage, args.transport, args.rate, args.limit
        )
    except (BagError, DataError) as error:
        exit_with("road-seg-make-bag", error)
    print(f"wrote {count} frames of {args.drive} ({args.split}) to {args.out}")


if __name__ == "__main__":
    main()
