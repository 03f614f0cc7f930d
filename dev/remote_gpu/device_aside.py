"""Moves the tracked files that a device call reads nothing of out of the checkout, and back after the call.

    python dev/remote_gpu/device_aside.py out --plan data   before a call that carries .gpu_data (teacher-dev, ablation)
    python dev/remote_gpu/device_aside.py out --plan node   before PLAN=node's call, which carries .whl
    python dev/remote_gpu/device_aside.py back              after the call, whatever it was

The device takes the working tree with what a call carries up to 64 MB; the tree with the data or the wheels is
over that (pack_camvid.py and pack_ros_wheels.py print the totals). `out` refuses to run twice without `back`.
"""

import argparse
import shutil
import sys
from pathlib import Path

from pack_camvid import NOT_ON_DEVICE
from pack_ros_wheels import NOT_FOR_THE_NODE, ROOT

ASIDE = Path("/tmp/road_seg_device_aside")
PLANS = {"data": NOT_ON_DEVICE, "node": NOT_FOR_THE_NODE}


def move_out(paths) -> None:
    if ASIDE.exists():
        sys.exit(f"device_aside: {ASIDE} holds files already: run `back` first")
    for path in paths:
        if (ROOT / path).exists():
            (ASIDE / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(ROOT / path, ASIDE / path)
            print(f"moved out: {path}")


def move_back() -> None:
    for path in dict.fromkeys(path for paths in PLANS.values() for path in paths):
        if (ASIDE / path).exists():
            if (ROOT / path).exists():
                sys.exit(f"device_aside: {path} is back in the checkout already; {ASIDE / path} is left as it is")
            (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(ASIDE / path, ROOT / path)
            print(f"moved back: {path}")
    shutil.rmtree(ASIDE, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("direction", choices=("out", "back"))
    parser.add_argument("--plan", choices=tuple(PLANS), default="data")
    args = parser.parse_args()
    if args.direction == "out":
        move_out(PLANS[args.plan])
    else:
        move_back()
    return 0


if __name__ == "__main__":
    sys.exit(main())
