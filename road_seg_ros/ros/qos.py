"""The node's QoS, by REP 2003 (sensor data): publishers reliable, subscribers matching what is offered.

Reliable outputs reach every kind of subscriber (RViz and `ros2 topic echo` ask for reliable, sensor-data
subscribers for best effort). The input asks for what the camera offers: a reliable camera is heard
reliably, so its large frames are retransmitted instead of lost; a best-effort one best effort.
"""

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

from ..core.files import one_line

# rclpy has it from Jazzy on: at creation, reliable if every known publisher offers reliable (or there is
# none yet), else best effort.
BEST_AVAILABLE = getattr(ReliabilityPolicy, "BEST_AVAILABLE", None)
POLICIES = {
    "best_available": BEST_AVAILABLE,
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}
NAMES = {ReliabilityPolicy.BEST_EFFORT: "best_effort", ReliabilityPolicy.RELIABLE: "reliable"}
# The input's reader keeps at least this many frames (image_transport's publisher depth). With depth 1, three
# reliable cameras publishing from one process in bursts lost half the frames of two of them inside DDS,
# uncounted (benchmarks/dds_delivery.md); the node's own two-frame mailbox still makes the newest frames win,
# and counts what it replaces as dropped.
INPUT_DEPTH = 10
MAX_DEPTH = 100  # the deepest history qos_depth and a depth override may ask for


def profile(reliability: ReliabilityPolicy, depth: int) -> QoSProfile:
    """Keep-last ``depth``, volatile: depth 1 never builds a backlog, the newest frame wins."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=DurabilityPolicy.VOLATILE
    )


def input_depth(qos_depth: int) -> int:
    """The input's history depth for a ``qos_depth`` setting: INPUT_DEPTH at least."""
    return max(qos_depth, INPUT_DEPTH)


class QosOverrideError(ValueError):
    """A standard ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` parameter the node cannot take."""


def output_publisher(node, msg_type, topic: str, qos: QoSProfile):
    """A publisher that takes ROS 2's standard ``qos_overrides./<topic>.publisher.reliability|history|depth``
    parameters (image_pipeline's convention), ``qos`` (the node's own settings) where none is given."""
    try:
        return node.create_publisher(
            msg_type, topic, qos, qos_overriding_options=QoSOverridingOptions.with_default_policies()
        )
    except (RuntimeError, ParameterException) as error:  # rclpy: RuntimeError for a value it does not know
        raise QosOverrideError(f"qos_overrides for {node.resolve_topic_name(topic)}: {one_line(error)}") from None


def input_overrides(node, topic: str, setting: str, depth: int) -> tuple:
    """The input's reliability setting and depth after ``qos_overrides./<topic>.subscription.reliability`` and
    ``.depth`` (declared read-only, the node's own settings their defaults). Declared here, not by rclpy, because
    the input re-subscribes as its publishers change (best_available), and its reliability can be best_available."""
    base = f"qos_overrides.{node.resolve_topic_name(topic)}.subscription"
    reliability, depth = (
        _declared(node, f"{base}.{policy}", default) for policy, default in (("reliability", setting), ("depth", depth))
    )
    if reliability not in POLICIES:
        raise QosOverrideError(f"{base}.reliability must be one of {', '.join(POLICIES)}, got {reliability!r}")
    if not 1 <= depth <= MAX_DEPTH:
        raise QosOverrideError(f"{base}.depth must be 1..{MAX_DEPTH}, got {depth}")
    return reliability, depth


def _declared(node, name: str, default):
    """A read-only parameter's value, declared on first use (a node that activates again has it already)."""
    if node.has_parameter(name):
        return node.get_parameter(name).value
    return node.declare_parameter(name, default, ParameterDescriptor(read_only=True)).value


def input_reliability(name: str, best_available=BEST_AVAILABLE) -> ReliabilityPolicy:
    """The policy for a ``qos_reliability`` value; best_available is best effort where rclpy lacks it."""
    if name == "best_available":
        return best_available if best_available is not None else ReliabilityPolicy.BEST_EFFORT
    return POLICIES[name]


def offered_reliability(publishers) -> ReliabilityPolicy | None:
    """What best_available picks for these publishers (TopicEndpointInfo): reliable only when all offer
    it, best effort when any does not; None when there is no publisher to follow."""
    offered = {info.qos_profile.reliability for info in publishers}
    if not offered:
        return None
    return ReliabilityPolicy.RELIABLE if offered == {ReliabilityPolicy.RELIABLE} else ReliabilityPolicy.BEST_EFFORT


class InputSubscription:
    """The node's input. With best_available it follows its publishers' reliability.

    rclpy decides best_available once, when the subscription is created (reliable while there is no
    publisher), so a best-effort camera that starts later would be incompatible, and a reliable camera
    replacing a best-effort one would be heard best effort. On a match or an incompatible publisher this
    re-creates the subscription with what the publishers offer, from a timer: never inside the
    subscription's own event callback.
    """

    RESUBSCRIBE_DELAY_S = 0.1

    def __init__(self, node, msg_type, topic: str, callback, setting: str, depth: int):
        self._node, self._msg_type, self._topic, self._callback = node, msg_type, topic, callback
        self._setting, self._depth = setting, depth
        self._follow = setting == "best_available" and BEST_AVAILABLE is not None
        if setting == "best_available" and BEST_AVAILABLE is None:
            node.get_logger().warning("qos_reliability best_available needs ROS 2 Jazzy or later: using best_effort")
        self._best_effort_seen = False
        self._timer = node.create_timer(self.RESUBSCRIBE_DELAY_S, self._resubscribe)
        self._timer.cancel()
        self._create(input_reliability(setting))

    def close(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_subscription(self._subscription)

    @property
    def topic_name(self) -> str:
        return self._subscription.topic_name

    def describe(self) -> str:
        """The reliability in use, e.g. 'best_available: reliable'."""
        chosen = NAMES.get(self._reliability, "unknown")
        return chosen if chosen == self._setting else f"{self._setting}: {chosen}"

    def _create(self, reliability: ReliabilityPolicy) -> None:
        events = None
        if self._follow:
            follow = self._on_publisher_change
            events = SubscriptionEventCallbacks(incompatible_qos=follow, matched=follow, use_default_callbacks=False)
        self._subscription = self._node.create_subscription(
            self._msg_type, self._topic, self._callback, profile(reliability, self._depth), event_callbacks=events
        )
        self._reliability = self._chosen_by_best_available() if reliability == BEST_AVAILABLE else reliability

    def _chosen_by_best_available(self) -> ReliabilityPolicy | None:
        node = self._node
        for info in node.get_subscriptions_info_by_topic(self.topic_name):
            if (info.node_name, info.node_namespace) == (node.get_name(), node.get_namespace()):
                return info.qos_profile.reliability
        return None

    def _on_publisher_change(self, event) -> None:
        # Only reliability can be incompatible with ours: a best-effort publisher, perhaps not yet in the graph.
        self._best_effort_seen |= isinstance(event, QoSRequestedIncompatibleQoSInfo)
        self._timer.reset()

    def _resubscribe(self) -> None:
        self._timer.cancel()
        wanted = offered_reliability(self._node.get_publishers_info_by_topic(self.topic_name))
        if self._best_effort_seen:
            wanted, self._best_effort_seen = ReliabilityPolicy.BEST_EFFORT, False
        if wanted is None or wanted == self._reliability:
            return
        self._node.destroy_subscription(self._subscription)
        self._create(wanted)
        self._node.get_logger().info(f"input {self.topic_name}: now {self.describe()}, as its publishers offer")
