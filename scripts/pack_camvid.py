"""Packs CamVid compactly for a GPU machine: same layout, frames as high-quality JPEG, labels as PNG.

    python scripts/pack_camvid.py --out .gpu_data/camvid --splits train val

The packed folder reads with `--data .gpu_data/camvid` like the original. JPEG
only touches training and selection frames; final val/test numbers are
computed on the original PNGs.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from road_seg_ros.training.data import camvid_root, read_split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="CamVid root (default: $CAMVID_ROOT or ../shared/camvid)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    # 70: all that travels to the device (the tracked tree, 51.1 MB with the teacher's 34.4 MB and the demo
    # bag's 10.2 MB, and this folder) must stay under 64 MiB: train+val is 15.5 MB at 70 (63.5 MiB in all),
    # 16.8 MB at 75, 18.7 MB at 80, 36.0 MB at 95. The total is printed, and over the limit it says so.
    parser.add_argument("--quality", type=int, default=70)
    args = parser.parse_args()
    root = camvid_root(args.data)
    for split in args.splits:
        lines = []
        for sample in read_split(root, split):
            image = Path(split) / f"{sample.name}.jpg"
            label = Path(f"{split}annot") / f"{sample.name}.png"
            (args.out / image).parent.mkdir(parents=True, exist_ok=True)
            (args.out / label).parent.mkdir(parents=True, exist_ok=True)
            bgr = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
            cv2.imwrite(str(args.out / image), bgr, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            shutil.copyfile(sample.label, args.out / label)
            lines.append(f"{image} {label}")
        (args.out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"packed {', '.join(args.splits)} into {args.out}: {size / 2**20:.1f} MiB")
    tree = tracked_bytes()
    total = (tree + size) / 2**20
    verdict = "fits" if total < CARRY_LIMIT_MIB else "OVER the limit: pack with a lower --quality"
    print(f"with the tracked tree ({tree / 2**20:.1f} MiB): {total:.1f} MiB of {CARRY_LIMIT_MIB} travel: {verdict}")
    return 0 if total < CARRY_LIMIT_MIB else 1


CARRY_LIMIT_MIB = 64  # the device tool's limit on the working tree plus carried paths


def tracked_bytes() -> int:
    """The bytes of the files git tracks here (they all travel to the device)."""
    names = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.split(b"\0")
    return sum(Path(name.decode()).stat().st_size for name in names if name and Path(name.decode()).is_file())


if __name__ == "__main__":
    sys.exit(main())
