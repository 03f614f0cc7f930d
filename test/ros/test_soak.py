"""Soak: road_seg_node at 30 Hz for minutes, a hostile frame mixed in every second (slow; not in `make test`).

    .venv/bin/python -m pytest -m slow -n 0 -s test/ros/test_soak.py    # ROAD_SEG_SOAK_SECONDS=180 by default

Every frame sent is accounted for: received by the node (reliable QoS, a queue deep enough that DDS drops
nothing), then answered, dropped as stale (counted) or rejected under its reason (counted); every answer
arrives here. The node's resident memory stays flat over the run.
"""

import os
import time

import cv2
import numpy as np
import pytest
from conftest import DIAGNOSTICS_QOS, diagnostic_values
from diagnostic_msgs.msg import DiagnosticArray
from hostile import BOMBS, compressed_message, damaged_compressed
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from test_node import NODE_PARAMS, stamped

SECONDS = float(os.environ.get("ROAD_SEG_SOAK_SECONDS", "180"))
RATE_HZ = 30
QUEUE = 30  # one second of frames: the node's mailbox, not DDS, decides what is dropped
RSS_GROWTH_LIMIT_BYTES = 64 * 2**20
QOS = QoSProfile(depth=QUEUE, reliability=ReliabilityPolicy.RELIABLE)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 300)]


def camera_frames(count: int) -> list[bytes]:
    """Smooth random 480x360 JPEGs, as a camera's compressed stream sends them."""
    rng = np.random.default_rng(0)
    coarse = [rng.integers(0, 256, (23, 30, 3), np.uint8) for _ in range(count)]
    return [cv2.imencode(".jpg", cv2.resize(frame, (480, 360)))[1].tobytes() for frame in coarse]


def test_thirty_hz_with_a_bad_frame_every_second(ros, start_node, tiny_checkpoint):
    params = {**NODE_PARAMS, "qos_reliability": "reliable", "qos_depth": QUEUE}
    node = start_node("/soak", model_path=tiny_checkpoint, input_transport="compressed", **params)
    labels = ros.inbox(Image, node.topic("label"), QOS)
    diagnostics = ros.inbox(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
    publisher = ros.publisher(CompressedImage, node.topic("../image/compressed"), QOS)
    good = [compressed_message(data, "jpeg") for data in camera_frames(RATE_HZ)]
    bad = [(compressed_message(make(), "png"), "oversize") for make, _ in BOMBS.values()]
    bad += [(compressed_message(data, "jpeg"), reason) for data, reason in damaged_compressed().values()]

    warm_up = good[0]
    warm_up.header = stamped("soak_warm_up")
    deadline = time.monotonic() + 120.0
    while labels.mark() == 0:  # discovery both ways and the first inference done before the clock starts
        assert time.monotonic() < deadline, node.output()
        publisher.publish(warm_up)
        time.sleep(0.5)
    before = _quiet(diagnostics, node)
    rss = [(0.0, node.memory()[0])]
    sent, bad_sent = 0, {}
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < SECONDS:
        if sent % RATE_HZ == RATE_HZ // 2:
            msg, reason = bad[(sent // RATE_HZ) % len(bad)]
            bad_sent[reason] = bad_sent.get(reason, 0) + 1
        else:
            msg = good[sent % RATE_HZ]
        msg.header = stamped("soak", sec=1_700_000_000 + sent // RATE_HZ, nanosec=sent % RATE_HZ)
        publisher.publish(msg)
        sent += 1
        if sent % (10 * RATE_HZ) == 0:
            rss.append((elapsed, node.memory()[0]))
        time.sleep(max(0.0, started + sent / RATE_HZ - time.monotonic()))

    def settled(values):
        return int(values["frames_in"]) - int(before["frames_in"]) >= sent and _accounted(values)

    after = _counters(diagnostics, node, settled)
    delta = {key: int(after[key]) - int(before[key]) for key in after if key.startswith(("frames_", "rejected_"))}
    deadline = time.monotonic() + 30.0
    while (answered := labels.count(lambda msg: msg.header.frame_id == "soak")) < delta["frames_out"]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the last answers are still in flight when the node has counted them
    growth = max(value for _, value in rss[len(rss) * 2 // 3 :]) - max(value for _, value in rss[: len(rss) // 3 + 1])
    print(
        f"\nsoak {SECONDS:.0f} s at {RATE_HZ} Hz: sent {sent} ({sum(bad_sent.values())} bad: {bad_sent}), "
        f"node counts {delta}, labels received {answered}, "
        f"RSS {rss[0][1] / 2**20:.0f} MiB at start, {rss[-1][1] / 2**20:.0f} MiB at end, "
        f"growth {growth / 2**20:.1f} MiB"
    )
    assert delta["frames_in"] == sent  # reliable, deep queue: DDS lost nothing
    assert delta["frames_idle"] == 0
    assert delta["frames_out"] + delta["frames_dropped"] + delta["frames_rejected"] == sent
    assert answered == delta["frames_out"]  # every answer the node counts arrived here
    for reason, count in bad_sent.items():  # a bad frame is rejected, or dropped as stale before its turn
        assert 0 < delta[f"rejected_{reason}"] <= count, (reason, delta, bad_sent)
    assert delta["frames_rejected"] <= sum(bad_sent.values())
    assert delta["rejected_internal_error"] == delta["rejected_inference_error"] == 0
    assert growth < RSS_GROWTH_LIMIT_BYTES, rss
    assert node.process.poll() is None and "Traceback" not in node.output()


def _accounted(values) -> bool:
    """Every frame the node counted in is answered, dropped, rejected or idle."""
    done = sum(int(values[key]) for key in ("frames_out", "frames_dropped", "frames_rejected", "frames_idle"))
    return done == int(values["frames_in"])


def _quiet(inbox, node, periods: int = 30) -> dict:
    """The counters once every frame in is accounted for and none came in over a whole diagnostics period."""
    previous = _counters(inbox, node)
    for _ in range(periods):
        values = _counters(inbox, node)
        if values["frames_in"] == previous["frames_in"] and _accounted(values):
            return values
        previous = values
    raise AssertionError(f"the node's counters did not settle within {periods} periods: {values}")


def _counters(inbox, node, condition=lambda values: True) -> dict:
    found = inbox.wait_for(
        lambda msg: (values := diagnostic_values(msg, node.status_name)) is not None and condition(values),
        timeout=60.0,
        since=inbox.mark(),
    )
    return diagnostic_values(found, node.status_name)
