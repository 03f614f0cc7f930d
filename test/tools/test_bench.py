"""road-seg-bench: the smoke configuration runs end to end, and the node overhead is measured over real ROS 2."""

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from road_seg_ros.core.backends import REGISTRY
from road_seg_ros.core.result import STAGES
from road_seg_ros.tools.bench import config_from_args, main, measure, parse_args
from road_seg_ros.tools.bench_cases import STUDENT, BenchConfig
from road_seg_ros.tools.bench_report import markdown
from road_seg_ros.tools.cameras_bench import measure_report, report_markdown
from road_seg_ros.tools.node_bench import measure_node_overhead, node_markdown

BENCH = Path(sys.executable).parent / "road-seg-bench"


def test_smoke_benchmark_writes_its_report(tmp_path):
    report_json, report_md = tmp_path / "out" / "smoke.json", tmp_path / "smoke.md"
    command = [str(BENCH), "--smoke", "--batch", "2", "--json", str(report_json), "--markdown", str(report_md)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr

    report = json.loads(report_json.read_text())
    cases = {(r["model"], r["backend"]) for r in report["results"]}
    assert cases == {
        (model, backend)
        for model in (STUDENT, "lraspp_mobilenet_v3_large")
        for backend in ("torch", "onnxruntime", "openvino")
    }
    for result in report["results"]:
        assert result["reps"] >= 2 and result["params"] > 0 and result["gflops"] > 0
        assert result["model_only_fps"] > 0 and result["end_to_end_fps"] > 0
        assert set(result["end_to_end_ms"]) == set(STAGES)
        assert result["end_to_end_ms"]["total"]["p95"] >= result["end_to_end_ms"]["total"]["p50"] > 0
    student = next(r for r in report["results"] if r["model"] == STUDENT)
    assert student["speedup"]["lraspp_mobilenet_v3_large"]["end_to_end"] > 0
    openvino = next(r for r in report["results"] if r["model"] == STUDENT and r["backend"] == "openvino")
    assert openvino["precision"] == "fp32" and openvino["over_onnxruntime"]["end_to_end"] > 0
    assert len(report["load_average_before"]) == 3
    # --batch 2: each student engine on one frame against a batch of two, the lines agreeing with the numbers.
    assert {(row["backend"], row["frames"]) for row in report["batch"]} == {
        ("torch", 2), ("onnxruntime", 2), ("openvino", 2)
    }  # fmt: skip
    for row in report["batch"]:
        assert row["ratio"]["total"] == pytest.approx(row["batch_ms"]["total"] / row["one_frame_ms"]["total"])
        assert row["batch_ms"]["inference"] > 0 and row["one_frame_ms"]["inference"] > 0

    text = report_md.read_text()
    assert f"Command: `road-seg-bench --smoke --batch 2 --json {report_json} --markdown {report_md}`" in text
    assert text.count("| student |") == 3 and "argmax inside" in text and "over ONNX Runtime fp32" in text
    assert text.count("a batch of 2 ") == 3


def test_precisions_become_rows_and_int8_runs_for_the_student_only(tiny_int8_checkpoint):
    baseline = "lraspp_mobilenet_v3_large"
    config = BenchConfig(
        models=(STUDENT, baseline),
        sizes=((96, 128),),
        backends=("onnxruntime", "openvino"),
        precisions=("fp32", "int8"),
        checkpoint=tiny_int8_checkpoint,
        reps=2,
        warmup=1,
        min_reps=2,
        seconds_per_case=5.0,
        num_threads=1,
    )
    report = measure(config)
    rows = {(r["model"], r["backend"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {
        (STUDENT, "onnxruntime", "fp32"),
        (STUDENT, "openvino", "fp32"),
        (STUDENT, "openvino", "int8"),
        (baseline, "onnxruntime", "fp32"),
        (baseline, "openvino", "fp32"),
    }
    int8 = rows[(STUDENT, "openvino", "int8")]
    assert int8["reps"] >= 2 and int8["over_onnxruntime"]["end_to_end"] > 0 and "speedup" in int8
    assert "| student | openvino | int8 | 96x128 |" in markdown(report, "road-seg-bench")


def test_bad_size_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--sizes", "360by480"])
    assert exit_info.value.code == 2 and "HEIGHTxWIDTH" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--node", "--cameras", "0"], "argument --cameras: must be at least 1, got 0"),
        (["--node", "--cameras", "2", "--rate", "nan"], "argument --rate: must be a positive number, got nan"),
        (["--node", "--cameras", "2", "--duration", "0"], "argument --duration: must be a positive number, got 0.0"),
        (["--reps", "0"], "argument --reps: must be at least 1, got 0"),
    ],
)
def test_bad_bench_arguments_are_refused_by_the_parser(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_backend_without_its_package_is_left_out_by_default_and_refused_by_name(monkeypatch, capsys):
    # As on the GPU machine, which has no OpenVINO: the CPU smoke run there crashed in make_cases before this.
    missing = dataclasses.replace(REGISTRY["openvino"], module="road_seg_ros_no_such_package")
    monkeypatch.setitem(REGISTRY, "openvino", missing)
    assert config_from_args(parse_args(["--smoke"])).backends == ("torch", "onnxruntime")
    assert main(["--smoke", "--backends", "openvino"]) == 1
    error = capsys.readouterr().err
    assert (
        error == "road-seg-bench: backend 'openvino' needs the Python package 'road_seg_ros_no_such_package', "
        "which is not installed\n"
    )


def test_cameras_without_the_node_are_refused(capsys):
    assert main(["--cameras", "2"]) == 2 and "--cameras needs --node" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_node_overhead_over_ros(tiny_checkpoint, tmp_path):
    config = BenchConfig(
        checkpoint=tiny_checkpoint, node_sizes=((96, 128), (120, 200)), reps=4, warmup=1, num_threads=1
    )
    rows = measure_node_overhead(config, log_path=tmp_path / "node.log")
    assert [row["size"] for row in rows] == ["96x128", "120x200"]
    for row in rows:
        assert row["frames"] + row["lost"] == 4 and row["frames"] >= 1
        assert row["latency"]["p50"] > row["engine"]["p50"] > 0
        assert "node_decode" in row and "node_publish" in row
    assert "| 96x128 |" in "\n".join(node_markdown(rows))


@pytest.mark.timeout(240)
def test_cameras_through_one_node_against_one_node_each(tiny_checkpoint):
    config = BenchConfig(
        checkpoint=tiny_checkpoint,
        node_sizes=((96, 128),),
        cameras=2,
        camera_rate=5.0,
        camera_seconds=2.0,
        reps=3,
        warmup=1,
        num_threads=1,
    )
    report = measure_report(config)
    [row] = report["cameras"]
    one, separate = row["setups"]
    assert (one["nodes"], separate["nodes"]) == (1, 2)
    for setup in row["setups"]:
        assert [camera["camera"] for camera in setup["cameras"]] == ["cam0", "cam1"]
        for camera in setup["cameras"]:
            assert camera["sent"] == 10 and 1 <= camera["answered"] <= camera["sent"] and camera["fps_out"] > 0
            assert camera["latency_ms"]["p95"] >= camera["latency_ms"]["p50"] > 0
        assert setup["cpu_s"] > 0 and setup["peak_rss_mb"] >= setup["rss_mb"] > 100  # a node holds torch: 100s of MB
    cost = row["batch_cost"]
    assert cost["device"] == "cpu" and cost["batch_ms"]["inference"] > 0 and cost["ratio"]["total"] > 0
    text = report_markdown(report, "road-seg-bench --node 96x128 --cameras 2")
    assert "| one node, 2 cameras | cam1 | 10 |" in text and "| 2 nodes, one camera each | 2 |" in text
    assert "CPU ms per answered frame" in text
    assert "- 96x128: one node serves 2 cameras with less CPU time and memory than 2 nodes" in text


def test_the_gpu_job_asks_the_bench_only_for_what_it_accepts():
    # PLAN=node spends a device call on these: a flag the bench refuses would lose that call.
    script = (REPO_ROOT / "scripts" / "gpu_job.sh").read_text()
    asked = re.findall(r"^\s*(?:NODE|CAMERAS)_BENCH=\((.*?)\)$", script, flags=re.MULTILINE | re.DOTALL)
    assert len(asked) == 4  # node and cameras, for the device and for the smoke run
    for words in asked:
        config = config_from_args(parse_args(shlex.split(words)))
        assert config.node_sizes, words
