"""road_seg_node against hostile input over real DDS: bombs, damaged and inconsistent frames are each counted
under their reason and the next good frame is answered; malformed parameter requests get an answer; the node
reports (ERROR) or exits (worker gone) rather than silently stop segmenting; SIGTERM is prompt.

One compressed-input and one raw-input node serve the module; fault-injection cases get short-lived nodes.
"""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import NODE_EXECUTABLE, PARAMS_FILE, cpu_engine, injected_node
from diagnostic_msgs.msg import DiagnosticStatus
from gate import NODE_GATE_TIMEOUT_S, gate_code
from hostile import (
    BOMBS,
    compressed_message,
    damaged_compressed,
    hostile_checkpoints,
    inconsistent_raw,
    write_hostile_checkpoint,
)
from rcl_interfaces.msg import Parameter, ParameterValue
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from safetensors import safe_open
from safetensors.torch import load_file
from sensor_msgs.msg import CompressedImage, Image
from test_node import (
    NODE_PARAMS,
    _bad_frame_is_counted,
    _connect,
    counters_after,
    labels_for,
    road_frame,
    set_parameter,
    stamped,
)

from road_seg_ros.ros.diagnostics import SILENT_ERROR_S
from road_seg_ros.ros.image_conversion import rgb_to_compressed, rgb_to_image
from road_seg_ros.ros.params import PARAMETERS_BY_NAME

PEAK_RSS_LIMIT_BYTES = 2.5e9
DEFAULT_LIMIT = PARAMETERS_BY_NAME["max_input_pixels"].default


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return cpu_engine(tiny_checkpoint)


@pytest.fixture(scope="module")
def compressed(ros, start_node, tiny_checkpoint):
    node = start_node("/hostile_compressed", model_path=tiny_checkpoint, input_transport="compressed", **NODE_PARAMS)
    return _connect(ros, node, CompressedImage, "../image/compressed")


@pytest.fixture(scope="module")
def raw(ros, start_node, tiny_checkpoint):
    return _connect(ros, start_node("/hostile_raw", model_path=tiny_checkpoint, **NODE_PARAMS), Image, "../image")


def good_frame_is_answered(ends, engine, tag: str) -> None:
    rgb = road_frame(60, 80, seed=len(tag))
    header = stamped(f"after_{tag}")
    if "compressed" in ends["node"].namespace:
        msg = rgb_to_compressed(rgb, header, fmt="png")
    else:
        msg = rgb_to_image(rgb, header)
    assert np.array_equal(labels_for(ends, msg), engine.segment(rgb).labels)
    assert ends["node"].process.poll() is None


def assert_clean_log(node, reason: str) -> None:
    output = node.output()
    assert "Traceback" not in output and "[FATAL]" not in output, output[-3000:]
    skipped = [line for line in output.splitlines() if f"frame skipped ({reason}," in line]
    assert skipped, output[-3000:]


@pytest.mark.parametrize("limit", [DEFAULT_LIMIT, 0], ids=["default_limit", "no_limit"])
def test_bombs_are_counted_oversize_and_memory_stays_bounded(ros, compressed, engine, limit):
    node = compressed["node"]
    assert set_parameter(ros, node, "max_input_pixels", limit).successful
    try:
        for name, (make, _) in BOMBS.items():
            _bad_frame_is_counted(compressed, compressed_message(make()), "oversize")
            good_frame_is_answered(compressed, engine, f"{name}_{limit}")
    finally:
        assert set_parameter(ros, node, "max_input_pixels", DEFAULT_LIMIT).successful
    _, peak = node.memory()
    assert peak < PEAK_RSS_LIMIT_BYTES, f"peak RSS {peak / 1e9:.2f} GB"
    assert_clean_log(node, "oversize")


@pytest.mark.parametrize("name", sorted(damaged_compressed()))
def test_damaged_compressed_frames_are_counted_and_the_next_answered(compressed, engine, name):
    data, reason = damaged_compressed()[name]
    _bad_frame_is_counted(compressed, compressed_message(data, "jpeg"), reason)
    good_frame_is_answered(compressed, engine, name)
    assert_clean_log(compressed["node"], reason)


@pytest.mark.parametrize("name", sorted(inconsistent_raw()))
def test_inconsistent_raw_frames_are_counted_and_the_next_answered(raw, engine, name):
    image, reason = inconsistent_raw()[name]
    _bad_frame_is_counted(raw, image, reason)
    good_frame_is_answered(raw, engine, name)
    assert_clean_log(raw["node"], reason)


def test_diagnostics_go_error_when_input_flows_without_output_and_recover(compressed, engine):
    node, inbox = compressed["node"], compressed["diagnostics"]

    def error_status(msg):
        return next((s for s in msg.status if s.name == node.status_name and s.level == DiagnosticStatus.ERROR), None)

    garbage = compressed_message(damaged_compressed()["jpeg_truncated_in_scan"][0], "jpeg")
    since, deadline, found = inbox.mark(), time.monotonic() + SILENT_ERROR_S + 30.0, None
    while found is None and time.monotonic() < deadline:  # a bad frame every 0.1 s until the status is ERROR
        compressed["input"].publish(garbage)
        try:
            found = inbox.wait_for(error_status, timeout=0.1, since=since)
        except AssertionError:
            pass
    assert found is not None, f"no ERROR status within {SILENT_ERROR_S + 30.0:g} s of bad frames only"
    message = error_status(found).message
    assert "no output for" in message and "while input flows" in message and "rejected" in message, message
    good_frame_is_answered(compressed, engine, "silence")
    recovered = counters_after(compressed, lambda values: values["level"] != DiagnosticStatus.ERROR)
    assert int(recovered["frames_out"]) > 0 and node.process.poll() is None


@pytest.mark.parametrize("service", [SetParameters, SetParametersAtomically])
def test_a_malformed_parameter_request_gets_a_failed_result_and_the_node_serves_on(ros, raw, engine, service):
    node = raw["node"]
    parameters = [Parameter(name="overlay_alpha", value=ParameterValue(type=200))]
    name = "set_parameters" + ("_atomically" if service is SetParametersAtomically else "")
    response = ros.call(service, f"{node.namespace}/road_seg/{name}", service.Request(parameters=parameters))
    results = response.results if service is SetParameters else [response.result]
    assert [result.successful for result in results] == [False]
    assert "malformed request: 'overlay_alpha' has type 200" in results[0].reason
    assert set_parameter(ros, node, "overlay_alpha", 0.5).successful
    good_frame_is_answered(raw, engine, f"malformed_{name}")


def node_with(start_node, name: str, patch: str, **params):
    """road_seg_node's main() run after ``patch`` (Python source, the node module as ``n``): fault injection."""
    return start_node(f"/{name}", executable=injected_node(patch), **NODE_PARAMS, **params)


def test_a_callback_that_raises_is_logged_and_the_node_serves_on(ros, start_node, tiny_checkpoint, engine):
    """The spin loop's own guard, with the parameter-service guard taken away: rclpy raises out of spin."""
    node = node_with(start_node, "unguarded", "n.refuse_malformed_parameter_requests = lambda node: None",
                     model_path=tiny_checkpoint)  # fmt: skip
    ends = _connect(ros, node, Image, "../image")
    good_frame_is_answered(ends, engine, "unguarded_start")
    client = ros.node.create_client(SetParameters, f"{node.namespace}/road_seg/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=60.0)
        malformed = [Parameter(name="overlay_alpha", value=ParameterValue(type=200))]
        client.call_async(SetParameters.Request(parameters=malformed))  # rclpy answers nothing: it raised
        deadline = time.monotonic() + 60.0
        while "callback failed, still serving: ValueError" not in node.output():
            assert time.monotonic() < deadline and node.process.poll() is None, node.log_tail()
            time.sleep(0.2)
    finally:
        ros.node.destroy_client(client)
    assert set_parameter(ros, node, "overlay_alpha", 0.5).successful
    good_frame_is_answered(ends, engine, "unguarded_after")


def publish_until(ros, node, done, frame_id: str, timeout: float = 90.0) -> None:
    """Publishes a small frame to ``node`` every 0.3 s until ``done()``: discovery can take seconds, so the first
    frames may reach nobody."""
    publisher = ros.publisher(Image, node.topic("../image"))
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, node.log_tail()
        publisher.publish(rgb_to_image(road_frame(60, 80), stamped(frame_id)))
        time.sleep(0.3)


def test_a_worker_that_stops_is_fatal_and_the_node_exits_non_zero(ros, start_node, tiny_checkpoint):
    patch = "def stop(*_):\n    raise SystemExit('injected')\nn.RoadSegNode._process = stop"
    node = node_with(start_node, "worker_stops", patch, model_path=tiny_checkpoint)
    publish_until(ros, node, lambda: node.process.poll() is not None, "kills_the_worker")  # a frame reached the worker
    assert node.wait(timeout=10.0) == 1, node.output()
    fatal = [line for line in node.output().splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1 and "inference worker stopped: SystemExit: injected" in fatal[0], node.output()
    assert "Traceback" not in node.output()


def test_sigterm_mid_decode_ends_the_node_without_waiting_for_the_frame(ros, start_node, tiny_checkpoint, tmp_path):
    """The worker is inside a decode that does not end (at a gate the test never opens): SIGTERM still ends the node
    with status 0. A node that waited for its frame would hang until the gate gives up."""
    patch = gate_code(tmp_path) + (
        "decode = n.image_to_rgb\n"
        "def stuck(*args, **kwargs):\n    gate('decode')\n    return decode(*args, **kwargs)\n"
        "n.image_to_rgb = stuck"
    )
    node = node_with(start_node, "sigterm", patch, model_path=tiny_checkpoint)
    ros.inbox(Image, node.topic("label"))  # an output somebody wants: else the node does not even decode
    publish_until(ros, node, lambda: "gate decode: waiting" in node.output(), "never_decoded")
    node.process.send_signal(signal.SIGTERM)
    assert node.wait(timeout=NODE_GATE_TIMEOUT_S / 4) == 0, node.output()


@pytest.mark.parametrize("params", ["missing.yaml", "broken.yaml"])
def test_a_params_file_that_does_not_parse_stops_the_node_with_one_fatal_line(tmp_path, params):
    (tmp_path / "broken.yaml").write_text("/**:\n  ros__parameters: [unclosed\n")
    command = [str(NODE_EXECUTABLE), "--ros-args", "--params-file", str(tmp_path / params)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    fatal = [line for line in output.splitlines() if "[FATAL]" in line]
    assert done.returncode == 1, output
    assert len(fatal) == 1 and "cannot start" in fatal[0] and str(tmp_path / params) in fatal[0], output
    assert "Traceback" not in output


def test_hostile_checkpoints_stop_the_node_at_start_up_with_one_fatal_line(tmp_path, tiny_checkpoint):
    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["road_seg"])
    state, cases = load_file(str(tiny_checkpoint)), hostile_checkpoints()
    processes = {}
    # Started together: each spends seconds importing torch.
    for name in ("json_string", "num_classes_huge", "std_zero", "weights_nan"):
        path = write_hostile_checkpoint(tmp_path / f"{name}.safetensors", cases[name][0], state, metadata)
        command = [str(NODE_EXECUTABLE), "--ros-args", "--params-file", str(PARAMS_FILE), "-p", f"model_path:={path}"]
        processes[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, process in processes.items():
        output, _ = process.communicate(timeout=120)
        fatal = [line for line in output.splitlines() if "[FATAL]" in line]
        assert process.returncode == 1, output
        assert len(fatal) == 1 and "cannot start" in fatal[0] and cases[name][1] in fatal[0], output
        assert "Traceback" not in output
