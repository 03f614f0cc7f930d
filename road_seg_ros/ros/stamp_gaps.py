"""Frames a camera sent that never reached the node, estimated from the gaps between its header stamps.

A camera stamps its frames at a steady period; a gap of n periods between two frames that arrived means n - 1
frames were lost on the way (transport, or a reader history that overflowed before the node took them). The
period is the camera's own: the median of its recent gaps, each divided by the number of periods it spans, so
that the gaps of lost frames do not stretch it even when most frames are lost. A stamp that goes backwards
(a restarted camera, a bag played again) or repeats is counted apart, and a gap longer than PAUSE_S and
PAUSE_PERIODS periods is a camera that paused, not frames lost. Frames without a stamp (zero) are not counted.
"""

import numpy as np

WINDOW = 64  # recent gaps the period is estimated from
MIN_GAPS = 8  # gaps needed before a first estimate; earlier gaps are counted once it exists
REESTIMATE_EVERY = 16  # gaps between estimates
MAX_SPAN = 4  # a gap is tried as 1..MAX_SPAN periods when looking for the period
FIT = 0.25  # a gap fits a period when it is within this many periods of a whole number of them
NEARLY_BEST = 0.9  # the period fits at least this share of the gaps the best candidate fits
PAUSE_S, PAUSE_PERIODS = 5.0, 10


def estimate_period(gaps) -> float:
    """The period that the gaps (seconds) are whole multiples of: of the candidates (each gap divided by 1 to
    MAX_SPAN), the longest that fits nearly as many gaps as the best one (any fraction of the period fits them
    too), then refined as the median of each fitting gap divided by its number of periods."""
    gaps = np.asarray(gaps, dtype=np.float64)
    candidates = np.unique(np.concatenate([gaps / span for span in range(1, MAX_SPAN + 1)]))
    ratios = gaps[None, :] / candidates[:, None]
    spans = np.maximum(np.rint(ratios), 1.0)
    fits = (np.abs(ratios - spans) < FIT).sum(axis=1)
    chosen = candidates[fits >= NEARLY_BEST * fits.max()].max()
    ratios = gaps / chosen
    spans = np.maximum(np.rint(ratios), 1.0)
    fitting = np.abs(ratios - spans) < FIT
    return float(np.median(gaps[fitting] / spans[fitting]))


class StampGaps:
    """One camera's stamps in arrival order -> frames lost, stamps backwards, stamps repeated."""

    def __init__(self):
        self._last_ns = None
        self._gaps = []  # recent gaps, seconds
        self._pending = []  # gaps seen before the first estimate
        self._since_estimate = 0
        self.period_s = None

    def observe(self, stamp_ns: int) -> dict:
        """The counts this frame adds: ``{"lost": n}``, ``{"stamps_backwards": 1}``, ``{"stamps_repeated": 1}``
        or nothing."""
        if stamp_ns <= 0:
            return {}
        last, self._last_ns = self._last_ns, stamp_ns
        if last is None:
            return {}
        if stamp_ns == last:
            return {"stamps_repeated": 1}
        if stamp_ns < last:
            return {"stamps_backwards": 1}
        gap = (stamp_ns - last) / 1e9
        if self.period_s is not None and gap > max(PAUSE_S, PAUSE_PERIODS * self.period_s):
            return {}
        self._gaps = [*self._gaps[-(WINDOW - 1) :], gap]
        self._since_estimate += 1
        if self.period_s is None:
            self._pending.append(gap)
            if len(self._gaps) < MIN_GAPS:
                return {}
            self._estimate()
            gaps, self._pending = self._pending, []
            lost = sum(self._lost(gap) for gap in gaps)
        else:
            if self._since_estimate >= REESTIMATE_EVERY:
                self._estimate()
            lost = self._lost(gap)
        return {"lost": lost} if lost else {}

    def _estimate(self) -> None:
        self.period_s, self._since_estimate = estimate_period(self._gaps), 0

    def _lost(self, gap: float) -> int:
        if gap > max(PAUSE_S, PAUSE_PERIODS * self.period_s):
            return 0
        return max(int(round(gap / self.period_s)) - 1, 0)
