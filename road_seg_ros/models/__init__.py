"""Networks, built from a plain config dict: the from-scratch student and teacher, and their pretrained
twins on an ImageNet EfficientNet-Lite encoder."""

from .blocks import AsymmetricPyramid, CoordinateAttention, ShiftedDepthwise, fuse_conv_bn, shift_depthwise
from .efficientnet import EfficientNetLite
from .lite_student import LiteSegStudent, LiteStudentConfig, lite_student_config
from .lite_teacher import LiteDeepLabV3Plus, LiteTeacherConfig, lite_teacher_config
from .student import RoadSegStudent, StudentConfig, student_config
from .teacher import DeepLabV3Plus, TeacherConfig, teacher_config

__all__ = [
    "AsymmetricPyramid",
    "CoordinateAttention",
    "DeepLabV3Plus",
    "EfficientNetLite",
    "LiteDeepLabV3Plus",
    "LiteSegStudent",
    "LiteStudentConfig",
    "LiteTeacherConfig",
    "RoadSegStudent",
    "ShiftedDepthwise",
    "StudentConfig",
    "TeacherConfig",
    "ARCHITECTURES",
    "build_model",
    "fuse_conv_bn",
    "input_statistics",
    "resolve_architecture",
    "shift_depthwise",
]

# What a training role may train: the from-scratch network, or a pretrained one. A teacher may also be the
# pretrained student's network on a larger encoder: only its accuracy matters, not its speed.
ARCHITECTURES = {"student": ("student", "lite_student"), "teacher": ("teacher", "lite_teacher", "lite_student")}
# Input mean and std (RGB, on [0, 1]) the pretrained encoders were trained with: (x - 0.5) / 0.5.
PRETRAINED_STATISTICS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _config(arch: dict):
    arch = dict(arch)
    name = arch.pop("name", None)
    if name == "student":
        return name, student_config(arch.pop("size", "small"), **arch)
    if name == "teacher":
        return name, teacher_config(**arch)
    if name == "lite_student":
        return name, lite_student_config(**arch)
    if name == "lite_teacher":
        return name, lite_teacher_config(**arch)
    known = ", ".join(repr(name) for name in dict.fromkeys(n for names in ARCHITECTURES.values() for n in names))
    raise ValueError(f"architecture name must be one of {known}, got {name!r}")


def resolve_architecture(arch: dict) -> dict:
    """Expands a short architecture spec into the full one saved with a checkpoint.

    ``{"name": "student", "size": "small"}`` becomes every StudentConfig field,
    so a checkpoint rebuilds the same network even if the size presets change.
    """
    name, config = _config(arch)
    return {"name": name, **config.to_dict()}


def build_model(arch: dict):
    """Builds an untrained network from an architecture spec (see resolve_architecture)."""
    name, config = _config(arch)
    networks = {"student": RoadSegStudent, "teacher": DeepLabV3Plus, "lite_student": LiteSegStudent,
                "lite_teacher": LiteDeepLabV3Plus}  # fmt: skip
    return networks[name](config)


def input_statistics(arch: dict, default):
    """The (mean, std) a network's inputs are normalised with: its encoder's where it is pretrained."""
    return PRETRAINED_STATISTICS if arch.get("name") in ("lite_student", "lite_teacher") else default
