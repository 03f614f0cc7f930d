"""Shared ROS 2 test fixtures: a private DDS domain per pytest-xdist worker, a client node, node processes.

Importing this module chooses the domain, so it is set before any rclpy.init
in the test process and inherited by every node the tests start.
"""

import os
import shutil
import signal
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from road_seg_ros.core.checkpoint import ModelInfo, save_checkpoint
from road_seg_ros.core.engine import SegmentationEngine
from road_seg_ros.core.options import EngineOptions
from road_seg_ros.models import build_model
from road_seg_ros.ros import client
from road_seg_ros.ros.runtime import apply_dds_profile

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

    def count(self, predicate=lambda msg: True) -> int:
        """How many messages so far match ``predicate``."""
        with self._arrived:
            return sum(1 for msg in self._messages if predicate(msg))

    def mark(self) -> int:
        """A position to wait from: ``wait_for(..., since=inbox.mark())`` ignores what came before."""
        with self._arrived:
            return len(self._messages)

    def since(self, position: int) -> list:
        """The messages received after ``position`` (a mark)."""
        with self._arrived:
            return self._messages[position:]

    def wait_for(self, predicate=lambda msg: True, timeout: float = 30.0, since: int = 0):
        deadline = time.monotonic() + timeout
        with self._arrived:
            while (found := next((m for m in self._messages[since:] if predicate(m)), None)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message on {self.topic} within {timeout:g} s")
                self._arrived.wait(left)
        return found


class RosClient(client.RosClient):
    """The test process's own rclpy node, spinning in a background thread."""

    def __init__(self):
        super().__init__("road_seg_test", executor_factory=SingleThreadedExecutor)
        self.spin_in_background()

    def inbox(self, msg_type, topic: str, qos=qos_profile_sensor_data) -> Inbox:
        inbox = Inbox(topic)
        self.node.create_subscription(msg_type, topic, inbox.add, qos)
        return inbox

    def publisher(self, msg_type, topic: str, qos=qos_profile_sensor_data):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, service: str, request, timeout: float = 90.0):
        """One request on a client of its own."""
        service_client = self.node.create_client(srv_type, service)
        try:
            return answer(service_client, service, request, timeout)
        finally:
            self.node.destroy_client(service_client)

    def service(self, srv_type, service: str, first_request=None, timeout: float = 120.0, attempt_s: float = 3.0):
        """A client kept for several requests, once ``first_request`` (idempotent: it may be sent more than once)
        has been answered. A response sent before the server has matched the client's response reader is lost
        (discovery runs each way on its own; waiting for the service covers only the request's way), so the
        first request is sent again until it is answered; after that the client's requests are answered. Without
        ``first_request``: the client only, for a service whose discovery another one's first request waits out."""
        service_client = self.node.create_client(srv_type, service)
        deadline = time.monotonic() + timeout
        while first_request is not None:
            try:
                answer(service_client, service, first_request, attempt_s)
                break
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
        return lambda request, timeout=90.0: answer(service_client, service, request, timeout)


def answer(service_client, service: str, request, timeout: float):
    assert service_client.wait_for_service(timeout_sec=timeout), f"service {service} did not appear"
    future = service_client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, f"no response from {service} within {timeout:g} s"
        time.sleep(0.01)
    return future.result()


def exchange(publisher, msg, inbox: Inbox, predicate, timeout: float = 90.0, period: float = 0.3):
    """Publishes ``msg`` every ``period`` until a matching reply arrives: the first ones may be lost
    while the node starts, discovery completes or its input follows a new publisher's QoS (best effort)."""
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


class NodeProcess(client.NodeProcess):
    """road_seg_node started through its console entry point with config/road_seg.yaml and overrides."""

    def __init__(self, log_path: Path, namespace: str = "", executable=None, **params):
        """``executable``: a command line to run instead of the console entry point (fault injection)."""
        super().__init__(log_path, PARAMS_FILE, params, namespace, executable=executable or [str(NODE_EXECUTABLE)])

    def topic(self, name: str) -> str:
        """A node-private topic (label, color, ...) or, with a leading '../', one in the node's namespace."""
        if name.startswith("../"):
            return f"{self.namespace}/{name[3:]}"
        return f"{self.namespace}/road_seg/{name}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its output, for a failure message."""
        return self.output()[-chars:]

    @property
    def status_name(self) -> str:
        return f"{self.namespace}/road_seg: segmentation"

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return super().wait(timeout)
        except TimeoutError:
            raise AssertionError(f"road_seg_node did not exit within {timeout:g} s:\n{self.output()}") from None


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


@pytest.fixture(scope="session")
def tiny_int8_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint in a folder of its own, with the int8 OpenVINO model that road-seg-export makes beside
    it from a tiny calibration set (4 CamVid train frames); skips the test if CamVid is absent."""
    from road_seg_ros.training.data import DataError, camvid_root
    from road_seg_ros.training.export import main

    try:
        camvid_root()
    except DataError as error:
        pytest.skip(str(error))
    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path_factory.mktemp("int8") / "tiny.safetensors"))
    argv = ["--format", "openvino", "--precision", "int8", "--checkpoint", str(checkpoint), "--calibration-frames", "4"]
    assert main(argv) == 0
    return checkpoint


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


def injected_node(patch: str) -> list[str]:
    """road_seg_node's command line with ``patch`` (Python source; the node module is ``n``) run before its main():
    fault injection, through NodeProcess's ``executable``."""
    return [sys.executable, "-c", f"import sys\nimport road_seg_ros.ros.node as n\n{patch}\nsys.exit(n.main())"]


def tiny_student_with_statistics(seed: int = 0) -> torch.nn.Module:
    """An untrained tiny student whose BatchNorms have random statistics and affine terms, so that folding them
    (and anything that rewrites the folded convolutions) has real biases to get right."""
    torch.manual_seed(seed)
    model = build_model({"name": "student", "size": "tiny"})
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def cpu_engine(checkpoint, **options) -> SegmentationEngine:
    """An engine on the CPU with one thread and otherwise the node's defaults (backend included): the labels
    the node computes with NODE_PARAMS, bit for bit."""
    return SegmentationEngine(EngineOptions(checkpoint=str(checkpoint), device="cpu", num_threads=1, **options))


def camvid_drive_frames(drive: str, count: int):
    """The first ``count`` (rgb, label) frames of a CamVid test drive; skips the test if CamVid is absent."""
    from road_seg_ros.tools.make_bag import drive_samples
    from road_seg_ros.training.data import DataError, load_label, load_rgb

    try:
        samples = drive_samples(None, "test", drive, limit=count)
    except DataError as error:
        pytest.skip(str(error))
    return [(load_rgb(s.image), load_label(s.label)) for s in samples]
