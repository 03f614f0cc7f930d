"""The node's parameters: one table that builds every descriptor, with the engine's defaults."""

from collections.abc import Callable
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from ..core.backends import BACKENDS
from ..core.codec import JPEG_QUALITY, PIXEL_CEILING
from ..core.options import DEFAULTS, DEVICES, PRECISIONS, THREAD_LIMITS, device_problem
from ..core.resources import NODE_NAME, PARAMS_FILE_NAME
from .qos import MAX_DEPTH

__all__ = [
    "MODEL_PARAMETERS",
    "NODE_NAME",
    "PARAMETERS",
    "PARAMETERS_BY_NAME",
    "PARAMS_FILE_NAME",
    "Param",
    "declare",
    "declare_model_parameters",
]
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
    problem: Callable | None = None  # value -> why it is refused (None: accepted), beyond choices and limits
    constraints: str = ""  # what ``problem`` accepts, for the descriptor

    def descriptor(self, read_only: bool | None = None) -> ParameterDescriptor:
        read_only = self.read_only if read_only is None else read_only
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=read_only)
        if isinstance(self.default, list):
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY  # rclpy would infer a byte array from []
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.constraints:
            descriptor.additional_constraints = self.constraints
        if self.limits and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=self.limits[0], to_value=self.limits[1])]
        elif self.limits:
            descriptor.integer_range = [IntegerRange(from_value=self.limits[0], to_value=self.limits[1], step=1)]
        return descriptor


# The one place parameter defaults live (the engine's from EngineOptions); config/road_seg.yaml repeats them.
PARAMETERS = (
    Param(
        "autostart",
        True,
        "Configure and activate at start-up; false: start unconfigured, for a lifecycle manager",
    ),
    Param("model_path", DEFAULTS.checkpoint, "Checkpoint (.safetensors) to run; empty: the shipped student"),
    Param(
        "device",
        DEFAULTS.device,
        "Inference device; auto picks CUDA when present, cuda:N the GPU N",
        problem=device_problem,
        constraints=f"one of: {', '.join(DEVICES)}, or cuda:N",
    ),
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
        "keep_aspect",
        DEFAULTS.keep_aspect,
        "Run each camera at the model's input height and its own aspect ratio; false: stretch to the input size",
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
    Param("qos_depth", 1, "History depth of the outputs, and of the input from 10 up", limits=(1, MAX_DEPTH)),
    Param("overlay_alpha", 0.5, "Weight of the class colours in ~/overlay", limits=(0.0, 1.0), read_only=False),
    Param(
        "jpeg_quality",
        JPEG_QUALITY,
        "JPEG quality of ~/color/compressed and ~/overlay/compressed (~/label/compressed is PNG: lossless)",
        limits=(1, 100),
        read_only=False,
    ),
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
# What the running model's labels mean, for consumers (`ros2 param get /road_seg class_names`): read-only, from
# the checkpoint once it is loaded; a value given at start-up is ignored.
MODEL_PARAMETERS = (
    Param("class_names", [], "Entry N names label id N (from the checkpoint)"),
    Param("class_colors", [], "Entry N is label id N's colour in ~/color and ~/overlay, #rrggbb (from the checkpoint)"),
)


def declare_model_parameters(node, class_names, class_colors) -> None:
    """MODEL_PARAMETERS on ``node``, for the model whose classes are ``class_names`` coloured ``class_colors``;
    declared at the first configure only (model_path is read-only: every later one loads the same model)."""
    colors = [f"#{red:02x}{green:02x}{blue:02x}" for red, green, blue in class_colors]
    for param, value in zip(MODEL_PARAMETERS, (list(class_names), colors)):
        if not node.has_parameter(param.name):
            node.declare_parameter(param.name, value, param.descriptor(), ignore_override=True)


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
