"""Networks: the real-time student and the DeepLabV3+ teacher, built from a plain config dict."""

from .blocks import AsymmetricPyramid, CoordinateAttention, ShiftedDepthwise, fuse_conv_bn, shift_depthwise
from .student import RoadSegStudent, StudentConfig, student_config
from .teacher import DeepLabV3Plus, TeacherConfig, teacher_config

__all__ = [
    "AsymmetricPyramid",
    "CoordinateAttention",
    "DeepLabV3Plus",
    "RoadSegStudent",
    "ShiftedDepthwise",
    "StudentConfig",
    "TeacherConfig",
    "build_model",
    "fuse_conv_bn",
    "resolve_architecture",
    "shift_depthwise",
]


def resolve_architecture(arch: dict) -> dict:
    """Expands a short architecture spec into the full one saved with a checkpoint.

    ``{"name": "student", "size": "small"}`` becomes every StudentConfig field,
    so a checkpoint rebuilds the same network even if the size presets change.
    """
    arch = dict(arch)
    name = arch.pop("name", None)
    if name == "student":
        config = student_config(arch.pop("size", "small"), **arch)
    elif name == "teacher":
        config = teacher_config(**arch)
    else:
        raise ValueError(f"architecture name must be 'student' or 'teacher', got {name!r}")
    return {"name": name, **config.to_dict()}


def build_model(arch: dict):
    """Builds an untrained network from an architecture spec (see resolve_architecture)."""
    full = resolve_architecture(arch)
    name = full.pop("name")
    if name == "student":
        return RoadSegStudent(student_config("small", **full))
    return DeepLabV3Plus(teacher_config(**full))
