"""The package through the real ROS 2 tools, as a user runs it: colcon build, ros2 launch, ros2 run, ros2 param.

The checkout is built with colcon in a temporary workspace; every tool then runs in the environment of
its `install/setup.bash`, without the DDS profile this test process uses, from a folder outside the
checkout. Each test starts one node (with the tiny checkpoint where the model does not matter).
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from camera_process import camera_environment, road_frame
from conftest import DIAGNOSTICS_QOS, PARAMS_FILE, REPO_ROOT, cpu_engine, diagnostic_values, exchange
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from road_seg_ros.core.codec import raw_to_array
from road_seg_ros.ros.image_conversion import rgb_to_compressed, rgb_to_image

VENV_BIN = Path(sys.executable).parent
TOOLS_MISSING = (
    "needs ros2 (launch, run, param) and colcon: `make ros2-tools` installs them where ../shared/ros2-tools exists"
)


def tool(name: str) -> str | None:
    """The venv's own (make ros2-tools), else a sourced distro's."""
    return str(VENV_BIN / name) if (VENV_BIN / name).is_file() else shutil.which(name)


HAVE_TOOLS = all(tool(name) for name in ("ros2", "colcon")) and all(
    importlib.util.find_spec(module) for module in ("ros2launch", "ros2run", "ros2param", "launch_ros")
)
pytestmark = pytest.mark.skipif(not HAVE_TOOLS, reason=TOOLS_MISSING + ", or source a ROS 2 distro")
# Restores SIGINT's default before exec: a process started in the background of a script inherits it
# ignored, and ros2 launch then cannot be stopped with it (../shared/ros2-tools/INSTALL.md).
DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)
STOP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace with this checkout in src/, built."""
    workspace = tmp_path_factory.mktemp("ws")
    (workspace / "src").mkdir()
    (workspace / "src" / "road_seg_ros").symlink_to(REPO_ROOT)
    # --base-paths src: colcon crawls recursively, and must not take the venv's share/*/package.xml for packages
    build = subprocess.run(
        [tool("colcon"), "build", "--base-paths", "src"],
        cwd=workspace,
        env={**camera_environment(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return workspace


@pytest.fixture(scope="module")
def sourced(workspace) -> dict:
    """The environment after `source install/setup.bash`, in a shell without our DDS profile."""
    shell = {**camera_environment(), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    dump = subprocess.run(
        ["bash", "-c", f"source {workspace / 'install' / 'setup.bash'} && env -0"],
        env=shell,
        capture_output=True,
        check=True,
    )
    return dict(entry.split("=", 1) for entry in dump.stdout.decode().split("\0") if "=" in entry)


class Tool:
    """A ROS 2 command in a session of its own (as in a terminal), its output in a log file."""

    def __init__(self, command: list[str], env: dict, log_path: Path, cwd: Path):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", DEFAULT_SIGINT, *command],
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"exited with code {self.process.returncode}:\n{self.output()}")

    def left_behind(self) -> list[int]:
        """Processes still in its session (it exited: an orphaned node would be one)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getsid(int(entry.name)) == self.process.pid:
                    found.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def interrupt(self, whole_session: bool = False) -> int:
        """SIGINT to the tool (whole_session: to everything it started too, as Ctrl-C does); its exit code."""
        if whole_session:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {STOP_TIMEOUT_S:g} s after SIGINT:\n{self.output()}") from None

    def kill(self) -> None:
        for pid in [self.process.pid, *self.left_behind()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


@pytest.fixture
def start_tool(sourced, tmp_path):
    started = []

    def start(*command: str) -> Tool:
        started.append(Tool(list(command), sourced, tmp_path / f"{command[1]}_{len(started)}.log", tmp_path))
        return started[-1]

    yield start
    for process in started:  # after a failure: nothing may outlive the test
        process.kill()


def ros2(sourced, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *arguments], env=sourced, capture_output=True, text=True, timeout=120)


def segmentation_values(diagnostics_inbox, status_name: str) -> dict:
    found = diagnostics_inbox.wait_for(lambda msg: diagnostic_values(msg, status_name) is not None, timeout=30.0)
    return diagnostic_values(found, status_name)


def test_colcon_build_installs_the_node_launch_file_config_and_model(workspace):
    install = workspace / "install" / "road_seg_ros"
    share = install / "share" / "road_seg_ros"
    assert os.access(install / "lib" / "road_seg_ros" / "road_seg_node", os.X_OK)
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "road_seg_ros").is_file()
    shipped = ("launch/road_seg.launch.py", "config/road_seg.yaml", "config/road_seg.rviz", "config/fastdds.xml")
    for relative in (*shipped, "models/student.safetensors"):
        assert (share / relative).is_file(), relative


def test_ros2_launch_with_every_argument(ros, start_tool, tiny_checkpoint, tmp_path):
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["/**"]["ros__parameters"].update(num_threads=1, overlay_alpha=0.25)  # shows the file was read
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    launch = start_tool(
        "ros2", "launch", "road_seg_ros", "road_seg.launch.py",
        "image:=/camera/image_raw", "input_transport:=compressed", f"params_file:={params_file}",
        f"model_path:={tiny_checkpoint}", "device:=cpu", "namespace:=/car", "node_name:=seg",
    )  # fmt: skip
    label = ros.inbox(Image, "/car/seg/label")
    overlay = ros.inbox(Image, "/car/seg/overlay")
    diagnostics = ros.inbox(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
    rgb = road_frame(120, 160, seed=11)
    msg = rgb_to_compressed(rgb, fmt="png")
    msg.header.frame_id = "launch_every_argument"
    publisher = ros.publisher(CompressedImage, "/camera/image_raw/compressed")

    reply = exchange(publisher, msg, label, lambda m: m.header.frame_id == msg.header.frame_id, timeout=120.0)
    launch.check_running()
    engine = cpu_engine(tiny_checkpoint)
    labels = raw_to_array(reply)
    assert np.array_equal(labels, engine.segment(rgb).labels)  # the tiny model, not the shipped one
    blended = raw_to_array(overlay.wait_for(lambda m: m.header.frame_id == msg.header.frame_id))
    assert np.array_equal(blended, engine.overlay(rgb, labels, 0.25))
    assert segmentation_values(diagnostics, "/car/seg: segmentation")["device"] == "cpu"
    assert launch.interrupt() == 0
    assert launch.left_behind() == []


def test_ros2_launch_on_the_bags_clock_at_debug_level_respawns_the_node(ros, start_tool, tiny_checkpoint):
    """use_sim_time: frame ages in ~/timing are against /clock; log_level: the node logs at debug; respawn: a
    node killed under launch comes back and answers."""
    launch = start_tool(
        "ros2", "launch", "road_seg_ros", "road_seg.launch.py", f"model_path:={tiny_checkpoint}", "device:=cpu",
        "namespace:=/sim", "use_sim_time:=true", "log_level:=debug", "respawn:=true",
    )  # fmt: skip
    clock_ns = 1_000_000 * 10**9  # a bag's time, far from the wall clock
    now = Clock()
    now.clock.sec, now.clock.nanosec = divmod(clock_ns, 10**9)
    clock = ros.publisher(Clock, "/clock")
    ticking = ros.node.create_timer(0.1, lambda: clock.publish(now))
    timing = ros.inbox(DiagnosticArray, "/sim/road_seg/timing")
    publisher = ros.publisher(Image, "/sim/image")

    def age_ms(frame_id: str) -> float:
        msg = rgb_to_image(road_frame(60, 80, seed=13))
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(clock_ns - 250 * 10**6, 10**9)  # 250 ms old
        reply = exchange(publisher, msg, timing, lambda m: m.status[0].message == f"frame {frame_id}", timeout=120.0)
        return float({value.key: value.value for value in reply.status[0].values}["age_ms"])

    try:
        assert age_ms("on_the_bags_clock") == pytest.approx(250.0, abs=1.0)
        assert "[DEBUG]" in launch.output()
        started = re.findall(r"\[road_seg_node-\d+\]: process started with pid \[(\d+)\]", launch.output())
        os.kill(int(started[0]), signal.SIGKILL)
        assert age_ms("after_respawn") == pytest.approx(250.0, abs=1.0)
        started = re.findall(r"\[road_seg_node-\d+\]: process started with pid \[(\d+)\]", launch.output())
        assert len(started) == 2, launch.output()
    finally:
        ros.node.destroy_timer(ticking)
    launch.check_running()
    assert launch.interrupt() == 0
    assert launch.left_behind() == []


def test_ros2_launch_with_two_cameras_and_ros2_param_get(ros, sourced, start_tool, tiny_checkpoint):
    launch = start_tool(
        "ros2", "launch", "road_seg_ros", "road_seg.launch.py",
        "cameras:=[front, left]", f"model_path:={tiny_checkpoint}", "device:=cpu", "namespace:=/car",
    )  # fmt: skip
    engine = cpu_engine(tiny_checkpoint)
    for camera, (height, width) in {"front": (60, 80), "left": (90, 120)}.items():
        label = ros.inbox(Image, f"/car/road_seg/{camera}/label")
        rgb = road_frame(height, width, seed=len(camera))
        msg = rgb_to_image(rgb)
        msg.header.frame_id = f"launch_{camera}"
        publisher = ros.publisher(Image, f"/car/{camera}/image")
        reply = exchange(publisher, msg, label, lambda m, f=msg.header.frame_id: m.header.frame_id == f, timeout=120.0)
        assert np.array_equal(raw_to_array(reply), engine.segment(rgb).labels)
    launch.check_running()
    got = ros2(sourced, "param", "get", "--no-daemon", "--timeout", "30", "/car/road_seg", "cameras")
    assert got.stdout.strip() == "String values are: ['front', 'left']", got.stdout + got.stderr
    got = ros2(sourced, "param", "get", "--no-daemon", "--timeout", "30", "/car/road_seg", "class_names")
    assert got.stdout.strip() == f"String values are: {engine.class_names}", got.stdout + got.stderr
    got = ros2(sourced, "param", "get", "--no-daemon", "--timeout", "30", "/car/road_seg", "class_colors")
    colors = [f"#{red:02x}{green:02x}{blue:02x}" for red, green, blue in engine.info.class_colors]
    assert got.stdout.strip() == f"String values are: {colors}", got.stdout + got.stderr
    assert launch.interrupt() == 0
    assert launch.left_behind() == []


def test_ros2_launch_rviz_without_rviz2_says_so_and_leaves_no_node_behind(ros, sourced, start_tool, tiny_checkpoint):
    if ros2(sourced, "pkg", "prefix", "rviz2").returncode == 0:
        pytest.skip("rviz2 is installed here: this checks a machine without it")
    launch = start_tool(
        "ros2", "launch", "road_seg_ros", "road_seg.launch.py",
        "image:=/camera/image_raw", "rviz:=true", f"model_path:={tiny_checkpoint}", "device:=cpu",
    )  # fmt: skip
    label = ros.inbox(Image, "/road_seg/label")
    msg = rgb_to_image(road_frame(60, 80, seed=12))
    msg.header.frame_id = "launch_rviz"
    publisher = ros.publisher(Image, "/camera/image_raw")
    exchange(publisher, msg, label, lambda m: m.header.frame_id == "launch_rviz", timeout=120.0)
    launch.check_running()
    rviz_lines = [line for line in launch.output().splitlines() if "rviz" in line.lower()]
    assert len(rviz_lines) == 1 and "rviz2 is not installed: starting without RViz" in rviz_lines[0], launch.output()
    assert launch.interrupt() == 0  # launch itself, not its session: it has to stop the node
    assert launch.left_behind() == [], launch.output()


def test_ros2_run_finds_the_shipped_model_through_the_ament_index_and_ros2_param_sets_it(
    ros, start_tool, sourced, workspace, tiny_checkpoint
):
    share = workspace / "install" / "road_seg_ros" / "share" / "road_seg_ros"
    run = start_tool(
        "ros2", "run", "road_seg_ros", "road_seg_node",
        "--ros-args", "-r", "image:=/camera/image_raw", "-p", "device:=cpu", "-p", "num_threads:=1",
    )  # fmt: skip
    overlay = ros.inbox(Image, "/road_seg/overlay")
    label = ros.inbox(Image, "/road_seg/label")
    publisher = ros.publisher(Image, "/camera/image_raw")
    rgb = road_frame(60, 80, seed=13)

    def answer(frame_id: str) -> tuple[np.ndarray, np.ndarray]:
        msg = rgb_to_image(rgb)
        msg.header.frame_id = frame_id

        def mine(m) -> bool:
            return m.header.frame_id == frame_id

        # Until both came: the node may match one best-effort subscription a moment before the other, and a frame
        # sent in between reaches only the first (seen once: the overlay came, the label never did).
        reply = exchange(publisher, msg, overlay, lambda m: mine(m) and label.count(mine) > 0, timeout=120.0)
        return raw_to_array(label.wait_for(mine)), raw_to_array(reply)

    answer("run_first")
    run.check_running()
    assert f"ready: {share / 'models' / 'student.safetensors'} on cpu" in run.output()
    # The same lookup, in the same environment, for the DDS profile the node applies
    lookup = "from road_seg_ros.core.resources import find_shipped; print(find_shipped('config', 'fastdds.xml'))"
    found = subprocess.run([sys.executable, "-c", lookup], env=sourced, cwd=workspace, capture_output=True, text=True)
    assert found.stdout.strip() == str(share / "config" / "fastdds.xml"), found.stdout + found.stderr

    changed = ros2(sourced, "param", "set", "--no-daemon", "--timeout", "30", "/road_seg", "overlay_alpha", "0.3")
    assert changed.returncode == 0 and "Set parameter successful" in changed.stdout, changed.stdout + changed.stderr
    labels, blended = answer("run_after_param_set")
    engine = cpu_engine(tiny_checkpoint)  # for its overlay only: palette and blending, not the model
    assert np.array_equal(blended, engine.overlay(rgb, labels, 0.3))
    assert not np.array_equal(blended, engine.overlay(rgb, labels, 0.5))
    refused = ros2(sourced, "param", "set", "--no-daemon", "--timeout", "30", "/road_seg", "device", "cuda")
    assert "read-only" in refused.stdout + refused.stderr, refused.stdout + refused.stderr

    assert run.interrupt(whole_session=True) == 0  # ros2 run does not pass SIGINT on; Ctrl-C reaches both
    assert run.left_behind() == []


def test_a_managed_node_goes_through_its_lifecycle_by_service_and_by_ros2_lifecycle(
    ros, start_tool, sourced, tiny_checkpoint
):
    """autostart:=false: unconfigured, serving the standard lifecycle services; configure loads the model and
    subscribes to nothing, activate answers frames, deactivate stops, cleanup and a second configure + activate
    work, shutdown ends the process with status 0."""
    run = start_tool(
        "ros2", "run", "road_seg_ros", "road_seg_node", "--ros-args", "-r", "__ns:=/managed",
        "-p", "autostart:=false", "-p", f"model_path:={tiny_checkpoint}", "-p", "device:=cpu", "-p", "num_threads:=1",
    )  # fmt: skip
    node = "/managed/road_seg"
    label = ros.inbox(Image, f"{node}/label")
    publisher = ros.publisher(Image, "/managed/image")

    change_state = ros.service(ChangeState, f"{node}/change_state")  # before get_state's first answer, below
    get_transitions = ros.service(GetAvailableTransitions, f"{node}/get_available_transitions")
    get_state = ros.service(GetState, f"{node}/get_state", GetState.Request())  # answered: the node is up

    def state() -> str:
        return get_state(GetState.Request()).current_state.label

    def change(transition: int) -> bool:
        return change_state(ChangeState.Request(transition=Transition(id=transition))).success

    def subscribed() -> bool:
        infos = ros.node.get_subscriptions_info_by_topic("/managed/image")
        return any(info.node_namespace == "/managed" for info in infos)

    def answered(frame_id: str) -> None:
        msg = rgb_to_image(road_frame(60, 80, seed=14))
        msg.header.frame_id = frame_id
        exchange(publisher, msg, label, lambda m: m.header.frame_id == frame_id, timeout=120.0)

    assert state() == "unconfigured"
    transitions = get_transitions(GetAvailableTransitions.Request())
    assert "configure" in {description.transition.label for description in transitions.available_transitions}
    assert change(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    time.sleep(1.0)
    assert not subscribed()  # configured: the model is loaded, nothing is subscribed
    assert change(Transition.TRANSITION_ACTIVATE) and state() == "active"
    answered("managed_active")
    got = ros2(sourced, "lifecycle", "get", "--no-daemon", "--spin-time", "10", node)
    assert got.stdout.startswith("active"), got.stdout + got.stderr
    done = ros2(sourced, "lifecycle", "set", "--no-daemon", "--spin-time", "10", node, "deactivate")
    assert "Transitioning successful" in done.stdout, done.stdout + done.stderr
    assert state() == "inactive"
    deadline = time.monotonic() + 10.0
    while subscribed() and time.monotonic() < deadline:  # the graph shows the unsubscription a moment later
        time.sleep(0.1)
    assert not subscribed()
    assert change(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
    assert change(Transition.TRANSITION_CONFIGURE) and change(Transition.TRANSITION_ACTIVATE)
    answered("managed_again")
    assert change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert run.process.wait(timeout=STOP_TIMEOUT_S) == 0, run.output()
    assert run.left_behind() == []


def test_ros2_launch_autostart_false_leaves_the_node_unconfigured(ros, sourced, start_tool, tiny_checkpoint):
    launch = start_tool(
        "ros2", "launch", "road_seg_ros", "road_seg.launch.py", f"model_path:={tiny_checkpoint}", "device:=cpu",
        "namespace:=/waiting", "autostart:=false",
    )  # fmt: skip
    get_state = ros.service(GetState, "/waiting/road_seg/get_state", GetState.Request())
    state = get_state(GetState.Request()).current_state
    assert state.label == "unconfigured", launch.output()
    launch.check_running()
    assert launch.interrupt() == 0
    assert launch.left_behind() == []
