"""Frame counts and latencies, and the diagnostic_msgs the node publishes from them."""

import math
import threading
import time
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..core.codec import REJECT_REASONS as IMAGE_REJECT_REASONS

LATENCY_WINDOW = 200  # frames behind the latency percentiles
PERCENTILES = (50, 90, 95, 99)
INFERENCE_ERROR = "inference_error"
INTERNAL_ERROR = "internal_error"  # anything else one frame raised: a bug, or an input nobody foresaw
REJECT_REASONS = (*IMAGE_REJECT_REASONS, INFERENCE_ERROR, INTERNAL_ERROR)
# No output for this long while frames keep arriving is an error, not a warning: the node serves nobody
# (a stuck worker, or nothing but bad frames). A slow model gets SILENT_FRAMES of its frame time instead:
# the DeepLabV3+ teacher takes 6.5 s a frame at 360x480 on this busy 2-core CPU.
SILENT_ERROR_S = 5.0
SILENT_FRAMES = 3


class FrameStats:
    """Frame counts since start and over the current diagnostics window, and recent latencies."""

    def __init__(self, frame_s: float = 0.0):
        """``frame_s``: the time one frame is expected to take (the warm-up's), until frames are timed."""
        self._lock = threading.Lock()
        self.totals = Counter()
        self.rejected = Counter()
        self._window = Counter()
        self._window_start = time.monotonic()
        self._latencies_ms = deque(maxlen=LATENCY_WINDOW)
        self._last_received = -math.inf
        self._unanswered_since = None  # the first frame received since the last output (or idle frame)
        self._frame_s = frame_s  # a running mean of the latency

    def count(self, event: str, reason: str = "", times: int = 1) -> int:
        """Counts ``event`` (received, dropped, idle, rejected; lost, stamps_backwards, stamps_repeated from the
        header stamps) ``times`` times; returns the total for ``reason`` if given."""
        with self._lock:
            self.totals[event] += times
            self._window[event] += times
            if event == "received":
                now = time.monotonic()
                if self._unanswered_since is None or now - self._last_received > self._silence_limit_s():
                    self._unanswered_since = now  # input resumed after a pause: the silence starts again
                self._last_received = now
            elif event == "idle":
                self._unanswered_since = None  # nobody listens: no output is due
            if reason:
                self.rejected[reason] += 1
            return self.rejected[reason] if reason else self.totals[event]

    def published(self, latency_ms: float) -> None:
        with self._lock:
            self.totals["published"] += 1
            self._window["published"] += 1
            self._latencies_ms.append(latency_ms)
            self._unanswered_since = None
            self._frame_s += 0.1 * (latency_ms / 1000.0 - self._frame_s)

    def silent_s(self) -> float:
        """How long frames have kept arriving without one output, once that is past the limit (SILENT_ERROR_S,
        or SILENT_FRAMES frame times for a slow model); else 0, as when input stopped."""
        with self._lock:
            now, limit = time.monotonic(), self._silence_limit_s()
            if self._unanswered_since is None or now - self._last_received > limit:
                return 0.0
            silent = now - self._unanswered_since
            return silent if silent >= limit else 0.0

    def _silence_limit_s(self) -> float:
        return max(SILENT_ERROR_S, SILENT_FRAMES * self._frame_s)

    def take_window(self) -> tuple[Counter, float, list]:
        """The window's counts, its length in seconds and the recent latencies; starts a new window."""
        with self._lock:
            now = time.monotonic()
            window, seconds = self._window, max(now - self._window_start, 1e-6)
            self._window, self._window_start = Counter(), now
            return window, seconds, list(self._latencies_ms)


def health(
    window: Counter, fps_out: float, min_fps: float, input_topic: str, silent_s: float = 0.0
) -> tuple[bytes, str]:
    """The level and message of the node's status for one window of counts.

    ``silent_s``: how long input has flowed with no output, past the limit (FrameStats.silent_s): ERROR.
    """
    if not window["received"]:
        return DiagnosticStatus.OK, f"no images on {input_topic} in the last second"
    if window["idle"] == window["received"]:
        return DiagnosticStatus.OK, "idle: no subscribers to any output"
    problems = [f"no output for {silent_s:.1f} s while input flows"] if silent_s else []
    if fps_out < min_fps:
        problems.append(f"output {fps_out:.1f} fps is below min_fps {min_fps:g}")
    if window["lost"]:
        problems.append(f"lost {window['lost']} frames on the way in (gaps in their header stamps)")
    if window["dropped"]:
        problems.append(f"dropped {window['dropped']} frames: inference is slower than the input")
    if window["rejected"]:
        problems.append(f"rejected {window['rejected']} bad frames")
    if silent_s:
        return DiagnosticStatus.ERROR, "; ".join(problems)
    if problems:
        return DiagnosticStatus.WARN, "; ".join(problems)
    return DiagnosticStatus.OK, f"{fps_out:.1f} fps"


def summary_values(stats: FrameStats, window: Counter, seconds: float, latencies: list) -> dict:
    """FPS in and out, latency percentiles and the frame counters, as the status's key/values."""
    percentiles = np.percentile(latencies, PERCENTILES) if latencies else [math.nan] * len(PERCENTILES)
    totals = stats.totals
    return {
        "fps_in": f"{window['received'] / seconds:.2f}",
        "fps_out": f"{window['published'] / seconds:.2f}",
        **{f"latency_p{p}_ms": f"{v:.2f}" for p, v in zip(PERCENTILES, percentiles)},
        "frames_in": totals["received"],
        "frames_out": totals["published"],
        "frames_dropped": totals["dropped"],
        "frames_lost": totals["lost"],  # sent but never received: from the header stamps, an estimate
        "stamps_backwards": totals["stamps_backwards"],
        "stamps_repeated": totals["stamps_repeated"],
        "frames_rejected": totals["rejected"],
        "frames_idle": totals["idle"],
        **{f"rejected_{reason}": stats.rejected[reason] for reason in REJECT_REASONS},
    }


class BatchStats:
    """How many frames each engine call took (the node's cameras batched), since start and over the window."""

    def __init__(self):
        self._lock = threading.Lock()
        self.sizes = Counter()  # batch size -> batches, since start
        self._window = Counter()

    def record(self, size: int) -> None:
        with self._lock:
            self.sizes[size] += 1
            self._window[size] += 1

    def take_window(self) -> tuple[Counter, Counter]:
        """The histogram since start and the window's; starts a new window."""
        with self._lock:
            window, self._window = self._window, Counter()
            return Counter(self.sizes), window


def engine_values(sizes: Counter, window: Counter) -> dict:
    """The engine status's batch values: mean frames per batch in the window, and the histogram since start."""
    batches = sum(window.values())
    mean = sum(size * count for size, count in window.items()) / batches if batches else math.nan
    return {
        "batches_in_window": batches,
        "frames_per_batch": f"{mean:.2f}",
        **{f"batches_of_{size}": sizes[size] for size in sorted(sizes)},
    }


def status(level, name: str, message: str, hardware_id: str, values: dict) -> DiagnosticStatus:
    """A DiagnosticStatus whose values are ``values`` (stringified)."""
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
    )


def status_array(level, name: str, message: str, hardware_id: str, values: dict, header=None) -> DiagnosticArray:
    """A DiagnosticArray of one status whose values are ``values`` (stringified)."""
    array = DiagnosticArray(status=[status(level, name, message, hardware_id, values)])
    if header is not None:
        array.header = header
    return array


def timing_values(timings_ms: dict, age_ms: float, outputs: list, batch_size: int = 1) -> dict:
    """One frame's stage times (``<stage>_ms``), its age against the clock, the outputs it got and the number of
    frames (cameras) in the batch it ran in."""
    values = {f"{stage}_ms": f"{ms:.3f}" for stage, ms in timings_ms.items()}
    return {**values, "age_ms": f"{age_ms:.3f}", "outputs": ",".join(outputs), "batch_size": batch_size}
