"""The node's health verdict: ERROR once input has flowed without output past the limit, which grows for slow
models; WARN for drops and rejections. Time is a fake clock here: the node test sees the real thing over DDS."""

from collections import Counter

import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from road_seg_ros.ros import diagnostics
from road_seg_ros.ros.diagnostics import SILENT_ERROR_S, SILENT_FRAMES, FrameStats, health


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(diagnostics.time, "monotonic", lambda: now[0])
    return now


def receive_for(stats, clock, seconds, period=0.1):
    for _ in range(round(seconds / period)):
        clock[0] += period
        stats.count("received")


def test_silence_past_the_limit_is_an_error_and_an_output_ends_it(clock):
    stats = FrameStats(frame_s=0.02)
    receive_for(stats, clock, SILENT_ERROR_S - 0.5)
    assert stats.silent_s() == 0.0
    receive_for(stats, clock, 1.0)
    assert stats.silent_s() >= SILENT_ERROR_S
    level, message = health(Counter(received=10, rejected=10), 0.0, 0.0, "/image", stats.silent_s())
    assert level == DiagnosticStatus.ERROR and message.startswith("no output for") and "rejected 10" in message
    stats.published(20.0)
    assert stats.silent_s() == 0.0


def test_a_slow_model_gets_its_own_frame_times_before_the_error(clock):
    stats = FrameStats(frame_s=6.5)  # the teacher on a busy CPU
    receive_for(stats, clock, SILENT_ERROR_S + 5.0)
    assert stats.silent_s() == 0.0
    receive_for(stats, clock, SILENT_FRAMES * 6.5 - SILENT_ERROR_S)
    assert stats.silent_s() >= SILENT_FRAMES * 6.5


def test_a_pause_in_the_input_or_nobody_listening_is_no_silence(clock):
    stats = FrameStats()
    receive_for(stats, clock, SILENT_ERROR_S + 1.0)
    clock[0] += SILENT_ERROR_S + 1.0  # the camera stopped
    assert stats.silent_s() == 0.0
    receive_for(stats, clock, 1.0)  # and started again: its silence starts again too
    assert stats.silent_s() == 0.0
    receive_for(stats, clock, SILENT_ERROR_S + 1.0)
    stats.count("idle")
    assert stats.silent_s() == 0.0


def test_warnings_without_silence():
    level, message = health(Counter(received=30, published=25, dropped=3, rejected=2), 25.0, 5.0, "/image")
    assert level == DiagnosticStatus.WARN and "dropped 3" in message and "rejected 2" in message
    assert health(Counter(received=30, idle=30), 0.0, 5.0, "/image")[0] == DiagnosticStatus.OK


def test_lost_frames_warn_apart_from_drops():
    level, message = health(Counter(received=10, published=10, lost=20), 10.0, 5.0, "/image")
    assert level == DiagnosticStatus.WARN and "lost 20 frames on the way in" in message and "dropped" not in message
    stats = FrameStats()
    stats.count("lost", times=3)
    values = diagnostics.summary_values(stats, Counter(), 1.0, [])
    assert values["frames_lost"] == 3 and values["frames_dropped"] == 0 and values["stamps_backwards"] == 0
