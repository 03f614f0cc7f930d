"""What a replay measured, and its report: report.json, report.md, plots and an overlay mosaic.

Live and offline replays feed the same ``ReplayTally`` one output at a time,
so both report alike. Accuracy uses one confusion matrix over every frame
with ground truth (the evaluator's convention); frames the node dropped have
no output and count nowhere.
"""

import json
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from ..core.labels import CLASS_COLORS, CLASS_NAMES, color_table
from ..training.metrics import ConfusionMatrix, format_iou_table

MOSAIC_FRAMES = 6
MOSAIC_SCALE = 0.5
OVERLAY_ALPHA = 0.5
REPORT_FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "latency_plot": "latency_hist.png",
    "iou_plot": "per_class_iou.png",
    "mosaic": "mosaic.png",
}


class ReplayError(RuntimeError):
    """The replay cannot go on; the message is one line naming why."""


class ReplayTally:
    """Accumulates a run: frames sent, each output's latency, the confusion matrix and mosaic tiles."""

    def __init__(self, frame_count: int, class_names=CLASS_NAMES, class_colors=CLASS_COLORS):
        """``class_names`` and ``class_colors``: the model's (its checkpoint's), CamVid's by default."""
        self.class_names = list(class_names)
        self.confusion = ConfusionMatrix(num_classes=len(self.class_names))
        self.frames_sent = 0
        self.frames_with_ground_truth = 0
        self.latencies_ms = []
        self.elapsed_s = 0.0
        self.node_timings_ms = {}  # stage -> values the node reported on its timing topic
        count = min(MOSAIC_FRAMES, frame_count)
        self._mosaic_indices = set(np.linspace(0, frame_count - 1, count).round().astype(int).tolist())
        self._tiles = []
        self._colors = color_table(class_colors)

    def add_output(self, index: int, frame, labels: np.ndarray, latency_ms: float) -> None:
        """One output: ``labels`` for the ``index``-th frame of the bag, ``latency_ms`` after it was sent."""
        self.latencies_ms.append(latency_ms)
        if frame.ground_truth is not None:
            self.confusion.update(labels, frame.ground_truth)
            self.frames_with_ground_truth += 1
        if index in self._mosaic_indices:
            self._tiles.append((index, self._tile(index, frame, labels)))

    def add_node_timings(self, timings_ms: dict) -> None:
        for stage, value in timings_ms.items():
            self.node_timings_ms.setdefault(stage, []).append(value)

    def _tile(self, index, frame, labels) -> np.ndarray:
        """The frame under its predicted classes, beside the frame under its ground truth when there is one."""
        panels = [(labels, f"frame {index}: prediction")]
        if frame.ground_truth is not None:
            panels.append((frame.ground_truth, "ground truth"))
        return overlay_tile(frame.rgb, panels, self._colors)

    def mosaic(self) -> np.ndarray | None:
        """The picked frames' tiles in bag order, two to a row."""
        return mosaic([tile for _, tile in sorted(self._tiles, key=lambda item: item[0])], columns=2)

    def report(self, **context) -> dict:
        """The JSON-ready report; ``context`` (mode, bag, topics, model, ...) is recorded as given."""
        received = len(self.latencies_ms)
        latencies = np.asarray(self.latencies_ms or [np.nan])
        accuracy = self.confusion.summary(self.class_names) if self.frames_with_ground_truth else {}
        return {
            **context,
            "frames_sent": self.frames_sent,
            "frames_received": received,
            "frames_dropped": self.frames_sent - received,
            "frames_with_ground_truth": self.frames_with_ground_truth,
            "fps": received / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "latency_ms": {
                "p50": _finite(np.percentile(latencies, 50)),
                "p95": _finite(np.percentile(latencies, 95)),
                "max": _finite(latencies.max()),
                "mean": _finite(latencies.mean()),
            },
            "miou": accuracy.get("miou"),
            "pixel_accuracy": accuracy.get("pixel_accuracy"),
            "per_class_iou": accuracy.get("per_class_iou"),
            "node_timings_ms": {stage: float(np.mean(values)) for stage, values in self.node_timings_ms.items()},
        }


def overlay_tile(rgb: np.ndarray, panels, colors: np.ndarray) -> np.ndarray:
    """Half-size copies of the frame side by side, each under one (labels, caption) panel's class colours."""
    images = []
    for labels, caption in panels:
        blended = cv2.addWeighted(rgb, 1.0 - OVERLAY_ALPHA, colors[labels], OVERLAY_ALPHA, 0.0)
        images.append(_captioned(_half(blended), caption))
    return np.hstack(images)


def mosaic(tiles: list, columns: int) -> np.ndarray | None:
    """Tiles of one size in rows of ``columns`` (blanks fill the last row); None without tiles."""
    if not tiles:
        return None
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])


def _half(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, None, fx=MOSAIC_SCALE, fy=MOSAIC_SCALE, interpolation=cv2.INTER_AREA)


def _captioned(image: np.ndarray, caption: str) -> np.ndarray:
    cv2.putText(image, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def write_report(report: dict, tally: ReplayTally, out_dir) -> dict:
    """Writes report.json, report.md, the plots and the mosaic to ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if tally.latencies_ms:
        written["latency_plot"] = _plot_latency(tally.latencies_ms, out_dir / REPORT_FILES["latency_plot"])
    if report["per_class_iou"] is not None:
        written["iou_plot"] = _plot_iou(report["per_class_iou"], out_dir / REPORT_FILES["iou_plot"])
    mosaic = tally.mosaic()
    if mosaic is not None:
        written["mosaic"] = out_dir / REPORT_FILES["mosaic"]
        cv2.imwrite(str(written["mosaic"]), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    written["json"] = out_dir / REPORT_FILES["json"]
    written["json"].write_text(json.dumps(report, indent=2) + "\n")
    written["markdown"] = out_dir / REPORT_FILES["markdown"]
    written["markdown"].write_text(format_markdown(report, {key: path.name for key, path in written.items()}))
    return written


def format_summary(report: dict) -> str:
    """The one-row table `make demo` prints: frames, FPS, latency p50/p95, mIoU."""
    latency = report["latency_ms"]
    miou = "n/a (no ground truth)" if report["miou"] is None else f"{report['miou']:.2f}"
    frames = f"{report['frames_received']}/{report['frames_sent']} ({report['frames_dropped']} dropped)"
    return "\n".join(
        [
            "| mode | frames received/sent | FPS | latency p50 (ms) | latency p95 (ms) | mIoU (%) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| {report['mode']} | {frames} | {report['fps']:.1f} | {_ms(latency['p50'])} | {_ms(latency['p95'])} "
            f"| {miou} |",
        ]
    )


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def format_markdown(report: dict, files: dict) -> str:
    latency = report["latency_ms"]
    lines = [
        f"# Replay of `{report['bag']}` ({report['mode']})",
        "",
        format_summary(report),
        "",
        f"Latency ({report['latency_definition']}): p50 {_ms(latency['p50'])} ms, p95 {_ms(latency['p95'])} ms, "
        f"max {_ms(latency['max'])} ms, mean {_ms(latency['mean'])} ms.",
        "",
        f"Input: `{report['topic']}` ({report['msgtype']}); ground truth: "
        + (f"`{report['gt_topic']}` ({report['frames_with_ground_truth']} frames)" if report["gt_topic"] else "none")
        + f"; pacing: {report['pacing']}; model: `{report['model']}`.",
    ]
    if report["node_timings_ms"]:
        stages = ", ".join(f"{stage} {value:.1f}" for stage, value in report["node_timings_ms"].items())
        lines += ["", f"Node stage timings (mean ms): {stages}."]
    if report["per_class_iou"] is not None:
        lines += [
            "",
            "## Accuracy",
            "",
            format_iou_table(report),
            "",
            f"Pixel accuracy {report['pixel_accuracy']:.2f}%.",
        ]
    else:
        lines += ["", "The bag has no ground truth, so there is no IoU."]
    pictures = [("latency_plot", "Latency histogram"), ("iou_plot", "Per-class IoU"), ("mosaic", "Overlay mosaic")]
    for key, title in pictures:
        if key in files:
            lines += ["", f"## {title}", "", f"![{title}]({files[key]})"]
    return "\n".join(lines) + "\n"


def _plot_latency(latencies_ms, path: Path) -> Path:
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 3)), color="#4a7ab5")
    for name, quantile, style in (("p50", 50, "--"), ("p95", 95, ":")):
        value = float(np.percentile(latencies_ms, quantile))
        axes.axvline(value, color="black", linestyle=style, label=f"{name} {value:.1f} ms")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("frames")
    axes.legend()
    figure.savefig(path, dpi=100)
    return path


def _plot_iou(per_class_iou: dict, path: Path) -> Path:
    names = list(per_class_iou)
    values = [per_class_iou[name] or 0.0 for name in names]
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.barh(names[::-1], values[::-1], color="#5a9a5a")
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    figure.savefig(path, dpi=100)
    return path
