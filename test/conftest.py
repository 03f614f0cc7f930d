"""Shared ROS 2 test fixtures: a private DDS domain per pytest-xdist worker, a client node, node processes.

Importing this module chooses the domain, so it is set before any rclpy.init
in the test process and inherited by every node the tests start.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from road_seg_ros.checkpoint import ModelInfo, save_checkpoint
from road_seg_ros.models import build_model
from road_seg_ros.node import apply_dds_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO_ROOT / "config" / "road_seg.yaml"
NODE_EXECUTABLE = Path(sys.executable).parent / "road_seg_node"
DIAGNOSTICS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
TINY_INPUT_SIZE = [96, 128]  # height, width: keeps inference to milliseconds


def ros_domain_id() -> int:
    """Distinct for each worker of a run; a second run on the same host most likely gets other ids."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return 1 + (zlib.crc32(run.encode()) + worker) % 100  # 1..100 is valid on every platform


os.environ["ROS_DOMAIN_ID"] = str(ros_domain_id())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
apply_dds_profile()


class Inbox:
    """Messages received on one topic, with a wait for the first that matches."""

    def __init__(self, topic: str):
        self.topic = topic
        self._messages = []
        self._arrived = threading.Condition()

    def add(self, msg) -> None:
        with self._arrived:
            self._messages.append(msg)
            self._arrived.notify_all()

    def mark(self) -> int:
        """A position to wait from: ``wait_for(..., since=inbox.mark())`` ignores what came before."""
        with self._arrived:
            return len(self._messages)

    def wait_for(self, predicate=lambda msg: True, timeout: float = 30.0, since: int = 0):
        deadline = time.monotonic() + timeout
        with self._arrived:
            while (found := next((m for m in self._messages[since:] if predicate(m)), None)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message on {self.topic} within {timeout:g} s")
                self._arrived.wait(left)
        return found


class RosClient:
    """The test process's own rclpy node, spinning in a background thread."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"road_seg_test_{os.getpid()}", context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
        self._spinner.start()

    def inbox(self, msg_type, topic: str, qos=qos_profile_sensor_data) -> Inbox:
        inbox = Inbox(topic)
        self.node.create_subscription(msg_type, topic, inbox.add, qos)
        return inbox

    def publisher(self, msg_type, topic: str, qos=qos_profile_sensor_data):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, service: str, request, timeout: float = 90.0):
        client = self.node.create_client(srv_type, service)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {service} did not appear"
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                assert time.monotonic() < deadline, f"no response from {service} within {timeout:g} s"
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5.0)


def exchange(publisher, msg, inbox: Inbox, predicate, timeout: float = 90.0, period: float = 0.3):
    """Publishes ``msg`` every ``period`` until a matching reply arrives: the first ones may be
    lost while the node starts or discovery completes (best-effort QoS)."""
    deadline = time.monotonic() + timeout
    while True:
        publisher.publish(msg)
        try:
            return inbox.wait_for(predicate, timeout=min(period, max(deadline - time.monotonic(), 0.0)))
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no reply on {inbox.topic} within {timeout:g} s") from None


def diagnostic_values(array, status_name: str) -> dict | None:
    """The key/values of the status called ``status_name`` in a DiagnosticArray, or None."""
    for status in array.status:
        if status.name == status_name:
            return {value.key: value.value for value in status.values} | {"level": status.level}
    return None


class NodeProcess:
    """road_seg_node started through its console entry point with config/road_seg.yaml and overrides."""

    def __init__(self, log_path: Path, namespace: str = "", **params):
        command = [str(NODE_EXECUTABLE), "--ros-args", "--params-file", str(PARAMS_FILE)]
        if namespace:
            command += ["-r", f"__ns:={namespace}"]
        for name, value in params.items():
            command += ["-p", f"{name}:={value}"]
        self.namespace = namespace
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def topic(self, name: str) -> str:
        """A node-private topic (label, color, ...) or, with a leading '../', one in the node's namespace."""
        if name.startswith("../"):
            return f"{self.namespace}/{name[3:]}"
        return f"{self.namespace}/road_seg/{name}"

    @property
    def status_name(self) -> str:
        return f"{self.namespace}/road_seg: segmentation"

    def output(self) -> str:
        return self.log_path.read_text()

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"road_seg_node did not exit within {timeout:g} s:\n{self.output()}") from None

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)


@pytest.fixture(scope="session")
def ros():
    client = RosClient()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny student at a small input size: real inference in milliseconds."""
    torch.manual_seed(0)
    arch = {"name": "student", "size": "tiny"}
    info = ModelInfo(arch=arch, input_size=TINY_INPUT_SIZE, description="untrained tiny student, for tests")
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors", build_model(arch).eval(), info)


@pytest.fixture(scope="module")
def start_node(tmp_path_factory):
    """Starts road_seg_node processes for a test module; stops any still running at its end."""
    started = []

    def start(namespace: str = "", **params) -> NodeProcess:
        log = tmp_path_factory.mktemp("node_log") / f"{namespace.strip('/') or 'road_seg'}.log"
        started.append(NodeProcess(log, namespace, **params))
        return started[-1]

    yield start
    for node in started:  # all at once: each takes seconds to exit
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGINT)
    for node in started:
        node.wait()


def camvid_drive_frames(drive: str, count: int):
    """The first ``count`` (rgb, label) frames of a CamVid test drive; skips the test if CamVid is absent."""
    from road_seg_ros.data import DataError, load_label, load_rgb
    from road_seg_ros.make_bag import drive_samples

    try:
        samples = drive_samples(None, "test", drive, limit=count)
    except DataError as error:
        pytest.skip(str(error))
    return [(load_rgb(s.image), load_label(s.label)) for s in samples]
