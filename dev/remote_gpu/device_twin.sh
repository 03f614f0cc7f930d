#!/usr/bin/env bash
# scripts/gpu_job.sh smoke-run here on the CPU with the remote GPU machine's Python and package versions
# (Python 3.12, torch 2.11, onnxruntime 1.30, no OpenVINO), so that a version fault shows here and not in the
# remote machine's limited time. About 3 GB of wheels on first use.
#
#   bash dev/remote_gpu/device_twin.sh [VENV]        (default /tmp/device-twin; made once, kept)
#
set -euo pipefail
VENV=${1:-/tmp/device-twin}
PY312=
for candidate in "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12.*/bin/python3; do  # the first that runs
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    PY312=$candidate && break
  fi
done
[ -n "$PY312" ] || { echo "device_twin: no Python 3.12 found (set PYTHON312=/path/to/python3.12)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 onnx==1.23.1 onnxruntime==1.30.0 \
    safetensors==0.8.0 opencv-python-headless pyyaml tqdm matplotlib pytest
fi
"$VENV/bin/python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
OUT=$(mktemp -d)
# Both plans: ablation (benches, probe, a teacher continued, four students), then teacher-dev (the default).
RUNS="$OUT/runs" SMOKE=1 TEACHER_MIN=0.1 PLAN=ablation PYTHON="$VENV/bin/python" OUT="$OUT/back" \
  bash scripts/gpu_job.sh > "$OUT/gpu.log" 2>&1
cat "$OUT/back/verify.txt"
ls "$OUT/back"
grep -q "^| student | torch |" "$OUT/back/gpu.md" && grep -q "^| student | torch |" "$OUT/back/gpu_compiled.md" &&
  grep -q "^| nchw+pairs |" "$OUT/back/probe.md" &&
  ls "$OUT"/back/teacher_fp16.safetensors.part00 > /dev/null &&
  [ "$(tar tzf "$OUT/back/results.tar.gz" | grep -c 'student_.*/best.safetensors')" = 4 ] &&
  echo "device twin: gpu_job.sh's ablation plan passed ($OUT)"
RUNS="$OUT/runs_dev" SMOKE=1 PYTHON="$VENV/bin/python" OUT="$OUT/back_dev" \
  bash scripts/gpu_job.sh > "$OUT/gpu_dev.log" 2>&1
ls "$OUT/back_dev"
ls "$OUT"/back_dev/teacher_fp16.safetensors.part00 > /dev/null &&
  [ "$(tar tzf "$OUT/back_dev/results.tar.gz" | grep -c 'teacher_[AB]\.log$')" = 2 ] &&
  echo "device twin: gpu_job.sh's default plan (teacher-dev) passed ($OUT)"
# PLAN=node: rclpy from the Python 3.12 wheels that travel (.whl/, python dev/remote_gpu/pack_ros_wheels.py), the node
# and two cameras (four on the GPU) on the CPU.
if ls .whl/ros_rclpy-*-cp312-*.whl > /dev/null 2>&1; then
  RUNS="$OUT/runs_node" SMOKE=1 PLAN=node ROS_VENV="$OUT/ros-venv" PYTHON="$VENV/bin/python" OUT="$OUT/back_node" \
    bash scripts/gpu_job.sh > "$OUT/gpu_node.log" 2>&1
  ls "$OUT/back_node"
  grep -qE "^\| 64x96 \| [0-9]+ \([0-9]+\) \|" "$OUT/back_node/gpu_node.md" &&  # the node overhead row
    grep -q "one node, 2 cameras" "$OUT/back_node/cameras_gpu.md" &&
    echo "device twin: gpu_job.sh's node plan passed ($OUT)"
else
  echo "device twin: no .whl/ros_rclpy-*-cp312-*.whl: the node plan not run (python dev/remote_gpu/pack_ros_wheels.py)"
fi
