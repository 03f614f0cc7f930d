"""rclpy plumbing shared by the node and its clients: the Fast DDS profile, the executor, a private domain,
and a guard on rclpy's parameter services."""

import io
import os
import sys
import traceback

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from rclpy.executors import Executor, ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter

from ..core.resources import find_shipped
from .cameras import REJECT_LOG_PERIOD_S

DDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
DDS_PROFILE_NAME = "fastdds.xml"
# Distros whose Fast DDS 2.x reads only the old variable; Fast DDS 3 warns that it is deprecated.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
PARAMETER_TYPES = frozenset(kind.value for kind in Parameter.Type)


STOP_CHECK_PERIOD_S = 0.1  # how soon Ctrl-C, SIGTERM or a stopped worker is acted on


def apply_dds_profile(environ=os.environ) -> None:
    """Points FastDDS at the large-frame profile unless the user chose a profile; call before rclpy.init."""
    if any(environ.get(name) for name in DDS_PROFILE_VARIABLES):
        return
    profile = find_shipped("config", DDS_PROFILE_NAME)
    if profile:
        environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
        if environ.get("ROS_DISTRO") in FASTDDS_2_DISTROS:
            environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)


def private_domain(environ=os.environ) -> None:
    """A private, localhost-only DDS domain unless the caller chose one; call before rclpy.init."""
    # 1..101: ids above 101 can collide with Linux ephemeral ports; 0 is left to the default graph
    environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    apply_dds_profile(environ)


def fast_executor(context=None) -> Executor:
    """rclpy's C++ events executor where the distro has it (Kilted on), else the single-threaded one.

    The Python executor rebuilds its wait set in Python, holding the GIL, after every callback; the
    worker thread waits for it before it can start on a frame. Measured here (benchmarks/cpu.md):
    the hand-over falls from about 0.6 ms to 0.15 ms at 360x480.
    """
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    # UnsupportedOperation: it enables faulthandler, which needs a real stderr (not so under capsys)
    except (ImportError, io.UnsupportedOperation):
        return SingleThreadedExecutor(context=context)


def refuse_malformed_parameter_requests(node) -> None:
    """Answers a set_parameters request whose ParameterValue has an unknown type byte with a failed result.

    rclpy's own parameter service raises ValueError on one (Parameter.Type(200)), out of the executor's
    spin: one malformed request from any client on the network would stop the node.
    """
    for service in node.services:
        if service.srv_type in (SetParameters, SetParametersAtomically):
            service.callback = _refusing_unknown_types(service.callback, service.srv_type)


def _refusing_unknown_types(callback, srv_type):
    def checked(request, response):
        unknown = [
            f"{p.name!r} has type {p.value.type}" for p in request.parameters if p.value.type not in PARAMETER_TYPES
        ]
        if not unknown:
            return callback(request, response)
        reason = f"malformed request: {', '.join(unknown)}, not a ParameterType (0..{max(PARAMETER_TYPES)})"
        result = SetParametersResult(successful=False, reason=reason)
        if srv_type is SetParameters:
            response.results = [result] * len(request.parameters)
        else:
            response.result = result
        return response

    return checked


def exit_now(status: int) -> None:
    """Ends the process once the node is shut down, without finalising the interpreter.

    Finalising would only tear down torch's modules, 2-3 s on a busy 2-core CPU (past the 2 s a SIGTERM
    may take), and with the worker still inside OpenCV or the runtime it aborts the process (std::terminate
    from a native thread pool).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def spin_once(executor, node) -> None:
    """One turn of the executor; an exception from a callback is logged and the node goes on serving."""
    try:
        executor.spin_once(timeout_sec=STOP_CHECK_PERIOD_S)
    except (ExternalShutdownException, ShutdownException):
        raise
    except Exception as error:  # e.g. a request rclpy itself cannot parse: one caller's problem, not the node's
        node.get_logger().error(
            f"callback failed, still serving: {describe_error(error)}", throttle_duration_sec=REJECT_LOG_PERIOD_S
        )


def describe_error(error: BaseException) -> str:
    """One line: the exception's type and first line, and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}{where}"
