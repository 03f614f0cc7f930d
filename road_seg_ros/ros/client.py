"""The other side of the node: a road_seg_node process, and an rclpy client with its own context.

Bag replay, the node benchmark and the tests all drive the node through
these: start it with a params file and overrides, talk to it over real
ROS 2 topics, stop it with a signal.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.signals import SignalHandlerOptions

from .runtime import fast_executor

NODE_MODULE = "road_seg_ros.ros.node"
STOP_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def node_command(params_file=None, parameters=None, namespace="", remaps=None, executable=None) -> list[str]:
    """road_seg_node's command line: ``parameters`` over the params file, topics remapped by ``remaps``."""
    command = list(executable or [sys.executable, "-m", NODE_MODULE]) + ["--ros-args"]
    if params_file:
        command += ["--params-file", str(params_file)]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for source, target in (remaps or {}).items():
        command += ["-r", f"{source}:={target}"]
    for name, value in (parameters or {}).items():
        command += ["-p", f"{name}:={value}"]
    return command


class NodeProcess:
    """road_seg_node running as its own process, its output in ``log_path``."""

    def __init__(self, log_path, params_file=None, parameters=None, namespace="", remaps=None, executable=None):
        self.namespace = namespace
        self.log_path = Path(log_path)
        self.command = node_command(params_file, parameters, namespace, remaps, executable)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def memory(self) -> tuple[int, int]:
        """(resident, peak resident) memory of the process so far, in bytes (VmRSS, VmHWM)."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        sizes = []
        for key in ("VmRSS", "VmHWM"):
            value, unit = status[key].split()
            if unit != "kB":
                raise RuntimeError(f"/proc/{self.process.pid}/status gives {key} in {unit}, not kB")
            sizes.append(int(value) * 1024)
        return sizes[0], sizes[1]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat

    def output(self) -> str:
        return self.log_path.read_text()

    def exit_reason(self) -> str | None:
        """None while running; else 'exited with code N: <last line of its output>'."""
        if self.process.poll() is None:
            return None
        lines = self.output().strip().splitlines()
        return f"road_seg_node exited with code {self.process.returncode}: {lines[-1] if lines else 'no output'}"

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Its exit code; killed (and TimeoutError raised) if it is still running after ``timeout``."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TimeoutError(f"road_seg_node did not exit within {timeout:g} s (log: {self.log_path})") from None

    def stop(self, sig=signal.SIGINT, timeout: float = STOP_TIMEOUT_S) -> int:
        """Sends ``sig`` (if still running) and waits for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)


class RosClient:
    """An rclpy node in a context of its own, spun on demand (``spin_until``) or in a background thread."""

    def __init__(self, name: str = "road_seg_client", executor_factory=fast_executor):
        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt for the caller to handle.
        rclpy.init(args=[], context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"{name}_{os.getpid()}", context=self.context)
        self.executor = executor_factory(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = None

    def spin_until(self, done, timeout_s: float | None, check=None, step_s: float = 0.05) -> bool:
        """Spins until ``done()`` is true (returns True) or ``timeout_s`` passes (False); ``check()`` may raise."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        while not done():
            if check is not None:
                check()
            remaining = step_s if deadline is None else min(step_s, deadline - time.perf_counter())
            if remaining <= 0:
                return False
            self.executor.spin_once(timeout_sec=remaining)
        return True

    def spin_in_background(self) -> None:
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        if self._spinner is not None:
            self._spinner.join(timeout=5.0)
