"""Fetches rclpy (Fast DDS) and the node's message packages as Python 3.12 wheels for the GPU machine.

    python dev/remote_gpu/pack_ros_wheels.py            (into .whl/; needs a Python 3.12 here, or PYTHON312=...)

The GPU machine has Python 3.12 and no ROS 2, and requirements.txt's ROS wheels
are the cp311 ones, so `gpu_job.sh` PLAN=node installs these there
(`pip install --target`) to run road_seg_node with its engine on CUDA. Only the
ros-* wheels are kept: the machine has numpy and PyYAML, and empy and lark only
generate message code. It prints what travels and whether it fits.
"""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pack_camvid import CARRY_LIMIT_BYTES, NOT_ON_DEVICE, bytes_under, tracked_bytes

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".whl"
# Tracked, and read by no step of PLAN=node: moved out of the checkout for that call.
NOT_FOR_THE_NODE = (*NOT_ON_DEVICE, "models/teacher.safetensors")


def python312() -> str:
    """A Python 3.12 on this machine: $PYTHON312, python3.12 on the PATH, or pyenv's."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12.*/bin/python3")))
    candidates = [os.environ.get("PYTHON312"), "python3.12", *pyenv]
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"]
        if shutil.which(candidate) and subprocess.run(probe, capture_output=True).returncode == 0:
            return candidate
    sys.exit("pack_ros_wheels: no Python 3.12 here (set PYTHON312=/path/to/python3.12)")


def ros_requirements() -> list[str]:
    """requirements.txt's ROS 2 lines, so that the GPU machine runs the versions tested here."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.startswith("ros-")]


def main() -> int:
    shutil.rmtree(WHEELS, ignore_errors=True)
    download = [python312(), "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(WHEELS)]
    subprocess.run(download + ros_requirements(), check=True)
    for wheel in WHEELS.iterdir():
        if not wheel.name.startswith("ros_"):
            wheel.unlink()
    wheels = bytes_under(WHEELS)
    tree = tracked_bytes() - sum(bytes_under(ROOT / path) for path in NOT_FOR_THE_NODE)
    total = tree + wheels
    fits = total < CARRY_LIMIT_BYTES
    print(f"{len(list(WHEELS.iterdir()))} wheels in {WHEELS}: {wheels / 1e6:.1f} MB")
    aside = ", ".join(NOT_FOR_THE_NODE)
    verdict = (
        "fits, once python dev/remote_gpu/device_aside.py out --plan node has moved those out"
        if fits
        else "OVER the limit"
    )
    print(f"with the tree less {aside} ({tree / 1e6:.1f} MB): {total / 1e6:.1f} MB travel: {verdict}")
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
