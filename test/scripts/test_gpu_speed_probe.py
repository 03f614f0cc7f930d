"""scripts/gpu_speed_probe.py: the same network run other ways gives the same output, and the report says so."""

import importlib.util
import itertools
import json

import torch
from conftest import REPO_ROOT, tiny_student_with_statistics

from road_seg_ros.models import fuse_conv_bn

spec = importlib.util.spec_from_file_location("gpu_speed_probe", REPO_ROOT / "scripts" / "gpu_speed_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def folded_student_with_biases():
    return fuse_conv_bn(tiny_student_with_statistics())


def test_depthwise_pairs_as_one_3x3_give_the_same_logits_at_every_size_and_edge():
    net = folded_student_with_biases()
    fused = probe.fuse_depthwise_pairs(folded_student_with_biases())
    pairs = [module for module in fused.modules() if isinstance(module, probe.DepthwisePair)]
    assert len(pairs) == 2 * (2 + 4)  # two per residual block: tiny has 2 + 4 blocks
    assert any(pair.dilation[1] > 1 for pair in pairs) and all(pair.weight.shape[-2:] == (3, 3) for pair in pairs)
    with torch.no_grad():
        for size in [(64, 96), (40, 72)]:  # 1/8 of 72 is 9 columns: dilations up to 8 reach past both edges
            frame = torch.randn(2, 3, *size)
            expected, got = net(frame)["out"], fused(frame)["out"]
            assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_the_cpu_run_writes_every_variant_and_the_kernels(tiny_checkpoint, tmp_path, capsys):
    report_path, markdown_path = tmp_path / "probe.json", tmp_path / "probe.md"
    probe.main([str(tiny_checkpoint), "--device", "cpu", "--sizes", "64x96", "--iterations", "2", "--warmup", "1",
                "--variants", "channels_last", "nchw+pairs", "--json", str(report_path),
                "--markdown", str(markdown_path)])  # fmt: skip
    report = json.loads(report_path.read_text())
    assert [(row["variant"], row["size"]) for row in report["timings"]] == [
        ("channels_last", "64x96"),
        ("nchw+pairs", "64x96"),
    ]
    assert all(row["labels_equal"] == 1.0 and row["ms"] > 0 for row in report["timings"])
    assert report["kernels"] and report["kernels"][0]["kernel"].startswith("aten::")
    assert "| nchw+pairs | 64x96 |" in markdown_path.read_text()


def test_every_variant_the_session_script_asks_for_is_one_the_probe_knows():
    # The third device session lost its probe to a variant name the probe did not accept.
    script = (REPO_ROOT / "scripts" / "gpu_job.sh").read_text()
    asked = [
        word
        for line in script.splitlines()
        if "--variants" in line
        for word in itertools.takewhile(lambda word: not word.startswith("-"), line.split("--variants", 1)[1].split())
    ]
    assert asked and set(asked) <= set(probe.VARIANTS), set(asked) - set(probe.VARIANTS)
