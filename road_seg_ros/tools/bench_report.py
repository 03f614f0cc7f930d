"""road-seg-bench's Markdown report, with each target met or missed by how much."""

from ..core.result import STAGES
from .batch_bench import batch_sentence, batch_target_line
from .bench_cases import BASELINES, STUDENT, TARGET_FPS, TARGET_GPU_SHARE, TARGET_NODE_MS, TARGET_OVER_ONNXRUNTIME


def markdown(report: dict, command: str) -> str:
    env = report["environment"]
    lines = [
        "# Engine benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), torch threads {env['torch_threads']}, "
        f"GPU {env['gpu'] or 'none'}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"openvino {env.get('openvino', 'none')}, Python {env['python']}.",
        f"Load average (1, 5, 15 min) before: {fmt_load(report['load_average_before'])}, "
        f"after: {fmt_load(report['load_average_after'])}.",
        f"Warm-up {env['warmup']} runs, then up to {env['reps_target']} repetitions per case "
        f"(fewer for cases over {env['seconds_per_case']:.0f} s; see reps), cases interleaved.",
        "FPS = 1000 / p50 latency. Model only = forward and argmax on a prepared batch; end to end = "
        "`SegmentationEngine.segment` on a uint8 frame of the same size (stages as the engine reports them).",
        "E2e CPU ms: CPU time of all the process's threads per end-to-end frame (time.process_time), which machine "
        "load does not stretch; with one thread it approximates the latency on an idle core.",
        "GFLOPs count 2 FLOPs per multiply-add (torch.utils.flop_counter); GMACs are half.",
        "",
        "| model | backend | precision | size | GFLOPs | params (M) | reps | model p50 / p95 ms | model FPS "
        "| preprocess p50 | inference p50 | postprocess p50 | e2e p50 / p95 ms | e2e FPS | e2e CPU ms p50 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        stages = r["end_to_end_ms"]
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['size']} | {r['gflops']:.3g} "
            f"| {r['params'] / 1e6:.2f} "
            f"| {r['reps']} | {r['model_only_ms']['p50']:.1f} / {r['model_only_ms']['p95']:.1f} "
            f"| {r['model_only_fps']:.1f} | {stages['preprocess']['p50']:.2f} | {stages['inference']['p50']:.1f} "
            f"| {stages['postprocess']['p50']:.2f} | {stages['total']['p50']:.1f} / {stages['total']['p95']:.1f} "
            f"| {r['end_to_end_fps']:.1f} | {r['end_to_end_cpu_ms']['p50']:.1f} |"
        )
    lines += ["", "## Student speed-up over the baselines (same size, backend and precision, same run)", ""]
    lines += ["| size | backend | precision | baseline | end to end | model only |", "|---|---|---|---|---:|---:|"]
    for r in report["results"]:
        for baseline, ratio in r.get("speedup", {}).items():
            lines.append(
                f"| {r['size']} | {r['backend']} | {r['precision']} | {baseline} "
                f"| {ratio['end_to_end']:.1f}x | {ratio['model_only']:.1f}x |"
            )
    students = [r for r in report["results"] if "over_onnxruntime" in r]
    if students:
        lines += ["", "## Student: each backend and precision over ONNX Runtime fp32 (same size, same run)", ""]
        lines += ["| size | backend | precision | end to end | model only |", "|---|---|---|---:|---:|"]
        for r in students:
            ratio = r["over_onnxruntime"]
            lines.append(
                f"| {r['size']} | {r['backend']} | {r['precision']} "
                f"| {ratio['end_to_end']:.2f}x | {ratio['model_only']:.2f}x |"
            )
    if report["argmax_placement"]:
        lines += ["", "## ONNX Runtime: argmax inside the graph or outside (student, model only, ms)", ""]
        lines += ["| size | inside p50 / p95 | outside (logits + numpy argmax) p50 / p95 |", "|---|---:|---:|"]
        for row in report["argmax_placement"]:
            inside, outside = row["argmax_inside"], row["argmax_outside"]
            lines.append(
                f"| {row['size']} | {inside['p50']:.1f} / {inside['p95']:.1f} "
                f"| {outside['p50']:.1f} / {outside['p95']:.1f} |"
            )
    if report.get("batch"):
        lines += ["", "## Student: one frame against a batch (same engine, same run)", ""]
        lines += [f"- {row['size']}: {batch_sentence(row)}" for row in report["batch"]]
    if report["node"]:
        from .node_bench import node_markdown

        lines += node_markdown(report["node"])
    lines += target_lines(report)
    return "\n".join(lines) + "\n"


def target_lines(report: dict) -> list:
    """The targets, met or missed by how much, from this run's numbers."""
    lines = ["", "## Targets", ""]
    for size, target in TARGET_FPS.items():
        student = [r for r in report["results"] if r["model"] == STUDENT and r["size"] == size]
        if student:
            lines.append(fps_target_line(max(student, key=lambda r: r["end_to_end_fps"]), target))
    for result in report["results"]:
        target = TARGET_OVER_ONNXRUNTIME.get(result["precision"])
        if result["backend"] == "openvino" and result["size"] == "360x480" and target and "over_onnxruntime" in result:
            ratio = result["over_onnxruntime"]["end_to_end"]
            lines.append(
                f"- OpenVINO {result['precision']} end to end >= {target}x ONNX Runtime fp32 at 360x480: "
                f"{ratio:.2f}x, {'met' if ratio >= target else 'missed'}."
            )
    for row in report.get("batch", []):
        if row["device"].startswith("cuda"):
            lines.append(batch_target_line(row, row["size"]))
    for row in report["node"]:
        if row["size"] == "360x480":
            overhead = row["overhead"]["p50"]
            verdict = "met" if overhead <= TARGET_NODE_MS else f"missed by {overhead - TARGET_NODE_MS:.2f} ms"
            lines.append(f"- Node overhead at 360x480 <= {TARGET_NODE_MS} ms: {overhead:.2f} ms p50, {verdict}.")
    return lines


def fps_target_line(best: dict, target: float) -> str:
    """The fastest student case at one size against its end-to-end FPS target (and the GPU share on CUDA)."""
    stages = {stage: best["end_to_end_ms"][stage]["p50"] for stage in STAGES[:3]}
    dominant = max(stages, key=stages.get)
    fps = best["end_to_end_fps"]
    verdict = "met" if fps >= target else f"missed by {target - fps:.1f} FPS"
    ratio = best.get("speedup", {}).get(BASELINES[0], {}).get("end_to_end")
    line = (
        f"- Student end to end at {best['size']} >= {target:g} FPS on {best['device']}: {fps:.1f} FPS "
        f"({best['backend']} {best['precision']}), {verdict}; largest stage {dominant} ({stages[dominant]:.1f} ms p50)"
        + (f"; {ratio:.1f}x LR-ASPP MobileNetV3-Large's end-to-end FPS." if ratio else ".")
    )
    if best["device"].startswith("cuda"):
        share = best["end_to_end_fps"] / best["model_only_fps"]
        verdict = "met" if share >= TARGET_GPU_SHARE else "missed"
        line += f"\n- GPU end-to-end FPS >= {TARGET_GPU_SHARE:.0%} of model-only: {share:.0%}, {verdict}."
    return line


def fmt_load(load) -> str:
    return ", ".join(f"{value:.2f}" for value in load)
