"""scripts/teacher_gap.py: the student's and its multi-scale teacher's mIoU, and the distillation terms."""

import importlib.util
import re
from types import SimpleNamespace

import numpy as np
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("teacher_gap", REPO_ROOT / "scripts" / "teacher_gap.py")
teacher_gap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(teacher_gap)


def frames(count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [SimpleNamespace(rgb=rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)) for _ in range(count)]


def test_a_student_scored_on_its_own_labels_gets_100_and_the_teacher_is_compared_with_it(tiny_checkpoint, capsys):
    engine, teacher = teacher_gap.student_and_teacher(tiny_checkpoint, [tiny_checkpoint])
    scenes = frames()
    for scene in scenes:
        scene.ground_truth = engine.segment(scene.rgb).labels
    teacher_gap.accuracy(engine, teacher, scenes)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"teacher: --teacher {tiny_checkpoint} (multi-scale 0.75/1/1.25/1.5 + flip)"
    line = printed[-1]
    found = re.fullmatch(r"3 frames; mIoU student 100\.00, teacher ([0-9.]+) \(([-+0-9.]+)\)", line)
    assert found, line
    assert float(found[1]) <= 100.0 and float(found[2]) == round(float(found[1]) - 100.0, 2)


def test_the_distillation_terms_are_printed_both_ways(tiny_checkpoint, capsys):
    engine, teacher = teacher_gap.student_and_teacher(tiny_checkpoint, [tiny_checkpoint])
    teacher_gap.distillation_terms(engine, teacher, frames(2))
    lines = capsys.readouterr().out.splitlines()[1:]  # after the teacher's name
    assert lines[0] == "2 frames; weighted terms, as computed now / before (raw logits):"
    terms = {line.split(":")[0].strip(): [float(v) for v in line.split(":")[1].split("/")] for line in lines[1:]}
    assert set(terms) == {"kd_pixel", "kd_cwd"}
    # pixel KD ignores the per-pixel offset between logits and log-probabilities; CWD does not
    assert np.isclose(*terms["kd_pixel"], atol=2e-3) and all(value >= 0 for value in terms["kd_cwd"])
