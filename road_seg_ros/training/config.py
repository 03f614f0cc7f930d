"""Training configuration: one dataclass, read from YAML and ``--set``, every field typed and bounded.

A bad value is refused before anything is built, with one line naming the
field, what it must be and what it got.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.files import one_line
from ..models import ARCHITECTURES, resolve_architecture
from .data import DataError, parse_split
from .losses import DISTILLATION_LOSSES, DistillationTerm


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message is one line."""


def default_distillation() -> list[dict]:
    """The distillation terms every run starts from (``--distill`` and configs choose among or replace them)."""
    # Weights and temperatures from the pixel-KD and CWD recipes in ../shared/REFERENCES.md (beside the checkout).
    return [
        {"name": "pixel", "weight": 1.0, "temperature": 1.0},
        {"name": "cwd", "weight": 3.0, "temperature": 4.0},
    ]


@dataclass
class TrainConfig:
    arch: dict = field(default_factory=lambda: {"name": "student", "size": "small"})
    epochs: int = 200
    batch_size: int = 8  # per process
    # Augmentation (augment.Augmentation reads these by name).
    crop_size: tuple = (360, 480)
    scale_range: tuple = (0.5, 2.0)
    rotation_degrees: float = 0.0
    jitter: float = 0.3
    hue_degrees: float = 0.0
    gamma_range: tuple = (1.0, 1.0)
    blur_probability: float = 0.0
    noise_std: float = 0.0
    rare_crop_probability: float = 0.0
    rare_classes: tuple = (2, 6, 7, 9, 10)  # pole, sign/symbol, fence, pedestrian, bicyclist
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    # A pretrained encoder (an arch named lite_*): start it from its ImageNet weights, at lr x encoder_lr_factor
    # (the new layers at lr).
    pretrained: bool = True
    encoder_lr_factor: float = 1.0
    weight_decay: float = 1e-4
    warmup_epochs: int = 3
    loss: str = "weighted_ce"  # ce | weighted_ce | ohem
    aux_weight: float = 0.4
    # Validate and save an exponential moving average of the weights (0: off): smoother than the last step's
    # weights, which matters most for small from-scratch models at the end of a short schedule.
    ema_decay: float = 0.0
    # The distillation terms the loss loop walks: name (a key of losses.DISTILLATION_LOSSES), weight, temperature.
    distillation: list = field(default_factory=default_distillation)
    teacher_flip: bool = True  # teacher target = mean of logits on the frame and its mirror
    # online: the teacher runs on every augmented batch; cached: once per training frame, its logits warped with
    # each crop (training.teacher_targets), at the student's own cost a step.
    teacher_targets: str = "online"
    eval_interval: int = 5
    # Wall-clock budget in minutes (0: none). The LR schedule then anneals by whichever is further along,
    # steps or time, and training stops when the budget is spent: the run ends with a fully decayed LR
    # however busy the machine is (budgeted training, Li et al., ICLR 2020).
    time_budget_minutes: float = 0.0
    seed: int = 0
    workers: int = 2  # DataLoader workers for CPU augmentation
    device_augmentation: bool = False  # hold the data on the device and augment there (GPU training)
    amp: bool = True  # bf16 autocast, CUDA only
    train_split: str = "train"  # a split, or splits joined by '+' (train+val for a final model)
    val_split: str = "val"
    # Which weights the run saves: best (the validation epoch with the highest val mIoU, best.safetensors) or
    # last (the final epoch, final.safetensors: for a fixed schedule chosen earlier, e.g. on train+val).
    keep_checkpoint: str = "best"
    limit: int | None = None  # use only the first N training frames (tests, smoke runs)
    val_limit: int | None = None

    def distillation_terms(self) -> list[DistillationTerm]:
        return [DistillationTerm(**term) for term in self.distillation]


# --------------------------------------------------------------------------- checks


def _number(name, value, low, high, integer=False):
    kind = "an integer" if integer else "a number"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_type or (not integer and not math.isfinite(value)):
        raise ConfigError(f"config field {name!r} must be {kind}, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"config field {name!r} must be in [{low:g}, {high:g}], got {value!r}")
    return value


def _integer(low, high):
    return lambda name, value: _number(name, value, low, high, integer=True)


def _real(low, high):
    return lambda name, value: float(_number(name, value, low, high))


def _optional(check):
    return lambda name, value: None if value is None else check(name, value)


def _choice(*choices):
    def check(name, value):
        if value not in choices:
            raise ConfigError(f"config field {name!r} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _boolean(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be true or false, got {value!r}")
    return value


def _pair(check, ordered=False):
    def pair(name, value):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"config field {name!r} must be a pair [a, b], got {value!r}")
        first, second = (check(name, item) for item in value)
        if ordered and first > second:
            raise ConfigError(f"config field {name!r} must be [low, high], got {value!r}")
        return (first, second)

    return pair


def _split(name, value):
    try:
        parse_split(value)
    except DataError as error:
        raise ConfigError(f"config field {name!r}: {error}") from None
    return value


def _class_ids(name, value):
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"config field {name!r} must be a non-empty list of class ids, got {value!r}")
    return tuple(_integer(0, 254)(name, item) for item in value)


def _architecture(name, value):
    if not isinstance(value, dict):
        raise ConfigError(f"config field {name!r} must be a mapping like {{name: student, size: small}}, got {value!r}")
    return value


def _ema_decay(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"config field {name!r} must be in (0, 1), or 0 for off; got {value!r}")
    return float(value)


def _distillation(name, value):
    if not isinstance(value, list):
        raise ConfigError(f"config field {name!r} must be a list of {{name, weight, temperature}}, got {value!r}")
    terms = []
    for term in value:
        if not isinstance(term, dict) or set(term) != {"name", "weight", "temperature"}:
            raise ConfigError(f"each {name} term must have exactly name, weight and temperature, got {term!r}")
        terms.append(
            {
                "name": _choice(*DISTILLATION_LOSSES)(f"{name}.name", term["name"]),
                "weight": _real(0.0, 1000.0)(f"{name}.weight", term["weight"]),
                "temperature": _real(0.01, 100.0)(f"{name}.temperature", term["temperature"]),
            }
        )
    return terms


CHECKS = {
    "arch": _architecture,
    "epochs": _integer(1, 100_000),
    "batch_size": _integer(1, 4096),
    "crop_size": _pair(_integer(32, 4096)),
    "scale_range": _pair(_real(0.05, 8.0), ordered=True),
    "rotation_degrees": _real(0.0, 45.0),
    "jitter": _real(0.0, 1.0),
    "hue_degrees": _real(0.0, 180.0),
    "gamma_range": _pair(_real(0.2, 5.0), ordered=True),
    "blur_probability": _real(0.0, 1.0),
    "noise_std": _real(0.0, 64.0),
    "rare_crop_probability": _real(0.0, 1.0),
    "rare_classes": _class_ids,
    "optimizer": _choice("adamw", "sgd"),
    "lr": _real(0.0, 10.0),
    "pretrained": _boolean,
    "encoder_lr_factor": _real(0.0, 100.0),
    "weight_decay": _real(0.0, 10.0),
    "warmup_epochs": _integer(0, 100_000),
    "loss": _choice("ce", "weighted_ce", "ohem"),
    "aux_weight": _real(0.0, 100.0),
    "ema_decay": _ema_decay,
    "distillation": _distillation,
    "teacher_flip": _boolean,
    "teacher_targets": _choice("online", "cached"),
    "eval_interval": _integer(1, 100_000),
    "time_budget_minutes": _real(0.0, 1e6),
    "seed": _integer(0, 2**31 - 1),
    "workers": _integer(0, 64),
    "device_augmentation": _boolean,
    "amp": _boolean,
    "train_split": _split,
    "val_split": _split,
    "keep_checkpoint": _choice("best", "last"),
    "limit": _optional(_integer(1, 10**6)),
    "val_limit": _optional(_integer(1, 10**6)),
}
assert set(CHECKS) == {f.name for f in dataclasses.fields(TrainConfig)}, "every config field needs a check"


def checked_config(values: dict, role: str) -> TrainConfig:
    """A TrainConfig for ``role`` (teacher or student) from field values (YAML-typed), each checked.

    ConfigError names the first bad one. The architecture is expanded to every field, as checkpoints save it.
    """
    unknown = sorted(set(values) - set(CHECKS))
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
    config = TrainConfig(**{name: CHECKS[name](name, value) for name, value in values.items()})
    if config.device_augmentation and (config.blur_probability or config.rare_crop_probability):
        raise ConfigError("blur_probability and rare_crop_probability need the CPU loader (device_augmentation: false)")
    name = config.arch.get("name", role)
    if name not in ARCHITECTURES[role]:
        raise ConfigError(f"config field 'arch': a {role} is one of {', '.join(ARCHITECTURES[role])}, got {name!r}")
    try:
        config.arch = resolve_architecture({**config.arch, "name": name})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config field 'arch': {one_line(error)}") from None
    return config


def read_config_file(path: Path) -> dict:
    """The field values in a YAML config file; ``base: FILE`` (beside it) names a parent whose values it overrides.

    One level: a parent may not name a base of its own.
    """
    values = _read_yaml_mapping(path)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: base must be a file name, got {base!r}")
    parent = _read_yaml_mapping(path.parent / base)
    if "base" in parent:
        raise ConfigError(f"config file {path.parent / base} is a base and names a base itself: one level only")
    return {**parent, **values}


def _read_yaml_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {one_line(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must be a mapping of field: value, got {type(values).__name__}")
    return values


def parse_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items, each VALUE read as YAML."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {value!r} is not a YAML value") from None
    return values
