"""Frames lost on the way in, from the gaps between a camera's header stamps: against the camera's own period,
however many frames are lost; stamps going backwards or repeating and a paused camera counted apart."""

import numpy as np
import pytest

from road_seg_ros.ros.stamp_gaps import MIN_GAPS, PAUSE_PERIODS, PAUSE_S, StampGaps

START_NS = 1_700_000_000 * 10**9


def observe_all(stamps) -> dict:
    gaps, counts = StampGaps(), {}
    for stamp in stamps:
        for event, times in gaps.observe(int(stamp)).items():
            counts[event] = counts.get(event, 0) + times
    return counts


@pytest.mark.parametrize("hz", [10.0, 30.0])
@pytest.mark.parametrize("loss", [0.0, 0.1, 0.5, 0.8, 0.9])
def test_each_lost_frame_is_counted_whatever_the_share_lost(hz, loss):
    rng = np.random.default_rng(int(loss * 10))
    sent = np.arange(600)
    kept = sent[(rng.random(sent.size) >= loss) | (sent == 0) | (sent == sent[-1])]
    stamps = START_NS + kept * 1e9 / hz + rng.normal(0.0, 0.05e9 / hz, kept.size)  # 5 % jitter
    spans = np.diff(kept)
    lost = spans[spans <= max(PAUSE_S * hz, PAUSE_PERIODS)] - 1  # longer gaps are a paused camera
    assert observe_all(stamps).get("lost", 0) == lost.sum()
    assert lost.sum() >= 0.5 * (sent.size - kept.size) or loss > 0.8


def test_a_steady_camera_loses_nothing_and_late_frames_are_no_loss():
    period, rng = 10**8, np.random.default_rng(1)
    jitter = rng.uniform(-0.15, 0.15, 300) + np.where(np.arange(300) % 10 == 0, 0.3, 0.0)  # every tenth late
    stamps = START_NS + (np.arange(300) + jitter) * period
    assert observe_all(stamps) == {}


def test_gaps_before_the_first_estimate_are_counted_once_it_exists():
    period = 10**8
    stamps = [START_NS + index * period for index in (0, 3, *range(4, 4 + MIN_GAPS))]
    assert observe_all(stamps) == {"lost": 2}


def test_backwards_and_repeated_stamps_and_pauses_are_counted_apart():
    period = 10**8
    steady = [START_NS + index * period for index in range(50)]
    restarted = [START_NS + index * period for index in range(20)]  # the camera starts over: backwards once
    paused = [steady[-1] + int(PAUSE_S * 2e9) + index * period for index in range(20)]
    counts = observe_all([*steady, steady[-1], *restarted, *paused])
    assert counts == {"stamps_repeated": 1, "stamps_backwards": 1}


def test_frames_without_a_stamp_are_not_counted():
    assert observe_all([0] * 20) == {}
