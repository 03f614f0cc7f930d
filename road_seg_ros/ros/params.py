"""The node's parameters: one table that builds every descriptor, with the engine's defaults."""

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from ..core.backends import BACKENDS
from ..core.codec import PIXEL_CEILING
from ..core.options import DEFAULTS, DEVICES, PRECISIONS, THREAD_LIMITS
from ..core.resources import NODE_NAME, PARAMS_FILE_NAME

__all__ = ["NODE_NAME", "PARAMETERS", "PARAMETERS_BY_NAME", "PARAMS_FILE_NAME", "Param", "declare"]
INPUT_RELIABILITIES = ("best_available", "best_effort", "reliable")
OUTPUT_RELIABILITIES = ("reliable", "best_effort")


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    choices: tuple = ()
    limits: tuple | None = None  # inclusive (low, high)
    read_only: bool = True  # fixed at start-up; the others may change while running

    def descriptor(self, read_only: bool | None = None) -> ParameterDescriptor:
        read_only = self.read_only if read_only is None else read_only
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=read_only)
        if isinstance(self.default, list):
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY  # rclpy would infer a byte array from []
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.limits and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=self.limits[0], to_value=self.limits[1])]
        elif self.limits:
            descriptor.integer_range = [IntegerRange(from_value=self.limits[0], to_value=self.limits[1], step=1)]
        return descriptor


# The one place parameter defaults live (the engine's from EngineOptions); config/road_seg.yaml repeats them.
PARAMETERS = (
    Param("model_path", DEFAULTS.checkpoint, "Checkpoint (.safetensors) to run; empty: the shipped student"),
    Param("device", DEFAULTS.device, "Inference device; auto picks CUDA when present", choices=DEVICES),
    Param(
        "precision",
        DEFAULTS.precision,
        "Inference precision: auto is the fastest that keeps the accuracy; fp16 needs CUDA, bf16 and int8 OpenVINO",
        choices=PRECISIONS,
    ),
    Param(
        "backend",
        DEFAULTS.backend,
        "Inference runtime: auto is the fastest installed for the device",
        choices=BACKENDS,
    ),
    Param(
        "num_threads", DEFAULTS.num_threads, "CPU threads for inference; 0: the runtime's default", limits=THREAD_LIMITS
    ),
    Param(
        "cuda_compile",
        DEFAULTS.cuda_compile,
        "torch.compile the network on CUDA: faster frames; start-up waits for the compiler (seconds per batch size)",
    ),
    Param(
        "cameras",
        [],
        "Camera names; each camera C: input C/image, outputs ~/C/label, ... Empty: one camera, input image",
    ),
    Param("input_transport", "raw", "raw: subscribe 'image'; compressed: 'image/compressed'", ("raw", "compressed")),
    Param(
        "qos_reliability",
        "best_available",
        "Reliability of the input; best_available: what the camera offers (REP 2003)",
        INPUT_RELIABILITIES,
    ),
    Param("output_reliability", "reliable", "Reliability of the outputs", OUTPUT_RELIABILITIES),
    Param("qos_depth", 1, "History depth of the input and outputs", limits=(1, 100)),
    Param("overlay_alpha", 0.5, "Weight of the class colours in ~/overlay", limits=(0.0, 1.0), read_only=False),
    Param(
        "max_input_pixels",
        3840 * 2160,
        f"Larger frames are rejected, compressed ones from their header; 0: the codec's ceiling, {PIXEL_CEILING}",
        limits=(0, PIXEL_CEILING),
        read_only=False,
    ),
    Param(
        "min_fps",
        5.0,
        "/diagnostics warns when output is slower while input flows",
        limits=(0.0, 1000.0),
        read_only=False,
    ),
)
PARAMETERS_BY_NAME = {param.name: param for param in PARAMETERS}
DEFAULT_VALUES = {param.name: param.default for param in PARAMETERS}


def declare(node, param: Param) -> None:
    """Declares ``param`` on ``node`` with its descriptor, its value from the command line or params file if given.

    A string array needs more: rclpy takes an empty list for a byte array, and an empty YAML list (``[]`` in a
    params file or ``-p``) arrives without a type at all. So it is declared by type, an unset value becomes a typed
    empty array, and only then is the parameter made read-only.
    """
    if not isinstance(param.default, list):
        node.declare_parameter(param.name, param.default, param.descriptor())
        return
    node.declare_parameter(param.name, Parameter.Type.STRING_ARRAY, param.descriptor(read_only=False))
    if node.get_parameter_or(param.name).type_ == Parameter.Type.NOT_SET:
        node.set_parameters([Parameter(param.name, Parameter.Type.STRING_ARRAY, list(param.default))])
    node.set_descriptor(param.name, param.descriptor())
