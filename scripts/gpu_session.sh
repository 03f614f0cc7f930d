#!/usr/bin/env bash
# One GPU session as one prepared run (issue 14): verify the CUDA path, then the teacher, then the four-way
# distillation ablation (none, pixel, cwd, both) side by side on the same GPU, then the checkpoints packed for
# the trip back. About 9 minutes: verify ~1.5, teacher TEACHER_MIN, students STUDENT_MIN (in parallel), packing.
#
# Here, once:   python scripts/pack_camvid.py --out .gpu_data/camvid --splits train val
# Device call:  bash scripts/gpu_session.sh            (carry [".gpu_data"], timeout_s 590)
# Smoke on CPU: SMOKE=1 PYTHON=.venv/bin/python OUT=/tmp/gpu bash scripts/gpu_session.sh
#               with the device's Python 3.12 and torch 2.11: bash scripts/device_twin.sh
# Back here: final val and test numbers come from road-seg-eval on the original PNGs, never on the device.
set -euo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DATA=${DATA:-.gpu_data/camvid}
TEACHER_MIN=${TEACHER_MIN:-3.5}
STUDENT_MIN=${STUDENT_MIN:-3}
EXTRA=()
BENCH=(--device cuda --precisions fp16 --sizes 360x480 720x960 --batch 4 --seconds-per-case 5)
if [ -n "${SMOKE:-}" ]; then
  EXTRA=(--device cpu --epochs 1 --set limit=4 --set val_limit=2 --set crop_size=[128,160] --set batch_size=2)
  BENCH=(--smoke --batch 2)
fi
PYTHON=${PYTHON:-python3}  # the device's python3 holds PyTorch; here: PYTHON=.venv/bin/python
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
RUNS=${RUNS:-runs/gpu}
mkdir -p "$RUNS" "$OUT"

# 1. Verify. The machine has PyTorch but no rclpy: the CUDA tests run without the ROS fixtures (--noconftest),
#    and the node's overhead is measured where ROS 2 runs. A failure here is reported, and training still runs.
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$PYTHON" -m pytest --noconftest -o addopts="" -p no:cacheprovider -q test/core/test_engine.py -k cuda || true
} > "$OUT/verify.txt" 2>&1
"$PYTHON" -m road_seg_ros.tools.bench "${BENCH[@]}" --json "$OUT/gpu.json" --markdown "$OUT/gpu.md" \
  > "$RUNS/bench.log" 2>&1 || tail -n 20 "$RUNS/bench.log" >> "$OUT/verify.txt"

train() { "$PYTHON" -m road_seg_ros.training.train "$@" "${EXTRA[@]}"; }

# 2. The teacher, then 3. the students distilled from it, side by side.
train teacher --config config/train_teacher.yaml --data "$DATA" --out "$RUNS/teacher" \
  --set time_budget_minutes="$TEACHER_MIN" > "$RUNS/teacher.log" 2>&1
for mode in none pixel cwd both; do
  train student --config config/train_student.yaml --data "$DATA" --out "$RUNS/student_$mode" \
    --teacher "$RUNS/teacher/best.safetensors" --distill "$mode" \
    --set time_budget_minutes="$STUDENT_MIN" > "$RUNS/student_$mode.log" 2>&1 &
done
wait

# The teacher travels as fp16 in parts of at most 15 MiB (the device returns files of at most 16 MiB).
"$PYTHON" - "$RUNS" <<'PY'
import sys
from pathlib import Path
from road_seg_ros.core.checkpoint import load_checkpoint, save_checkpoint
runs = Path(sys.argv[1])
model, info = load_checkpoint(runs / "teacher" / "best.safetensors")
save_checkpoint(runs / "teacher_fp16.safetensors", model, info, half=True)
PY
split -b 15M -d "$RUNS/teacher_fp16.safetensors" "$OUT/teacher_fp16.safetensors.part"
tar czf "$OUT/students.tar.gz" "$RUNS"/student_*/best.safetensors "$RUNS"/*/log.csv "$RUNS"/*/curves.png
tail -n 3 "$RUNS"/*.log | tr '\r' '\n' | grep -v "it/s" || true
for run in "$RUNS"/*/; do echo "$run $(tail -n 1 "$run/log.csv")"; done
