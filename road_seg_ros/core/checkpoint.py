"""Model checkpoints: weights in safetensors, everything needed to use them in its metadata.

A checkpoint is one ``.safetensors`` file. Loading it never unpickles
anything; the metadata (JSON under the key ``road_seg``) holds the
architecture, class names and colours, normalisation and training input
size, so the engine needs nothing else to run it.
"""

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..models import build_model, resolve_architecture
from ..models.fields import short
from . import labels
from .files import one_line, written_whole

FORMAT_VERSION = 1
METADATA_KEY = "road_seg"
INPUT_SIDE = (16, 4096)  # pixels per side of the input size a model runs at
MAX_NAME_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 10_000


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming why."""


@dataclass
class ModelInfo:
    arch: dict
    class_names: list = field(default_factory=lambda: list(labels.CLASS_NAMES))
    class_colors: list = field(default_factory=lambda: [list(c) for c in labels.CLASS_COLORS])
    mean: list = field(default_factory=lambda: list(labels.MEAN))
    std: list = field(default_factory=lambda: list(labels.STD))
    input_size: list = field(default_factory=lambda: [360, 480])  # height, width
    description: str = ""
    training: dict = field(default_factory=dict)  # recipe and results, for the model card

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **self.__dict__})

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        """Parses and checks the metadata (see checked_metadata) before anything is built from it."""
        try:
            values = json.loads(text)
        except (ValueError, RecursionError) as error:  # RecursionError: nesting thousands deep
            raise CheckpointError(f"metadata is not valid JSON: {one_line(error)}") from None
        return cls(**checked_metadata(values))


# --------------------------------------------------------------------------- the metadata schema


def checked_metadata(values) -> dict:
    """The ModelInfo fields of parsed metadata, every one typed and bounded; CheckpointError names the first bad one.

    Nothing is allocated from a value before it passes: the architecture's own bounds (models.fields) keep
    the network it describes to a sane size, and one class name and colour per class keep the colour table
    and labels consistent with the network's outputs.
    """
    if not isinstance(values, dict):
        raise CheckpointError(f"metadata must be a JSON object, got {type(values).__name__} {short(values)}")
    values = dict(values)
    version = values.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"unsupported checkpoint format version {short(version)} (expected {FORMAT_VERSION})")
    unknown = sorted(str(name) for name in set(values) - {f.name for f in fields(ModelInfo)})
    if unknown:
        raise CheckpointError(f"unknown metadata field(s): {short(unknown)}")
    if "arch" not in values:
        raise CheckpointError("metadata has no 'arch' field")
    checked = {**ModelInfo(arch={}).__dict__, **values}
    arch = checked["arch"]
    if not isinstance(arch, dict):
        raise CheckpointError(
            f'metadata field \'arch\' must be an object like {{"name": "student"}}, got {short(arch)}'
        )
    try:
        classes = resolve_architecture(arch)["num_classes"]
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"metadata field 'arch': {one_line(error)}") from None
    _check_list(checked, "class_names", classes, _is_name, f"a name of 1 to {MAX_NAME_LENGTH} characters")
    _check_list(checked, "class_colors", classes, _is_color, "[r, g, b], integers in [0, 255]")
    _check_list(checked, "mean", 3, _is_finite, "a finite number")
    _check_list(checked, "std", 3, lambda value: _is_finite(value) and value > 0, "a positive finite number")
    _check_list(checked, "input_size", 2, _is_side, f"an integer in [{INPUT_SIDE[0]}, {INPUT_SIDE[1]}]")
    description = checked["description"]
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        raise CheckpointError(
            f"metadata field 'description' must be text of at most {MAX_DESCRIPTION_LENGTH} characters, "
            f"got {short(description)}"
        )
    if not isinstance(checked["training"], dict):
        raise CheckpointError(f"metadata field 'training' must be an object, got {short(checked['training'])}")
    return checked


def _check_list(values: dict, name: str, count: int, item_ok, item_text: str) -> None:
    value = values[name]
    if not isinstance(value, list) or len(value) != count:
        per_class = " (one per class)" if name.startswith("class_") else ""
        raise CheckpointError(f"metadata field {name!r} must be a list of {count}{per_class}, got {short(value)}")
    for index, item in enumerate(value):
        if not item_ok(item):
            raise CheckpointError(f"metadata field {name!r}[{index}] must be {item_text}, got {short(item)}")


def _is_integer(value, low, high) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_name(value) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_NAME_LENGTH


def _is_color(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_integer(channel, 0, 255) for channel in value)


def _is_side(value) -> bool:
    return _is_integer(value, *INPUT_SIDE)


# --------------------------------------------------------------------------- saving and loading


def save_checkpoint(path, model: torch.nn.Module, info: ModelInfo, half: bool = False) -> Path:
    """Writes the model's weights and ``info``; ``half`` stores float tensors as fp16.

    ``info`` must pass the checks loading applies (CheckpointError), so no checkpoint is written unloadable.
    """
    info.arch = resolve_architecture(info.arch)
    ModelInfo.from_json(info.to_json())
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as temporary:
        save_file(state, str(temporary), metadata={METADATA_KEY: info.to_json()})
    return path


def read_info(path) -> ModelInfo:
    """Reads only a checkpoint's metadata."""
    path = Path(path)
    with _opened(path) as handle:
        return _info(path, handle)


def load_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, ModelInfo]:
    """Builds the network a checkpoint describes and loads its weights (fp32, eval mode).

    In order, each step only once the one before passed: the metadata's checks, the network built from it,
    every weight's name and shape compared with the network's from the file header, and only then the
    weights read and checked finite.
    """
    path = Path(path)
    with _opened(path) as handle:
        info = _info(path, handle)
        try:
            model = build_model(info.arch)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: bad architecture in metadata: {error}") from None
        expected = model.state_dict()
        _check_layout(path, handle, expected, info.arch.get("name"))
        state = {name: _weight(path, handle, name, expected[name].dtype) for name in expected}
    model.load_state_dict(state)
    return model.to(device).eval(), info


@contextmanager
def _opened(path: Path):
    """safe_open, with whatever a damaged file raises turned into one CheckpointError line."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        handle = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({error})") from None
    with handle:
        yield handle


def _info(path: Path, handle) -> ModelInfo:
    metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: not a road_seg checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        return ModelInfo.from_json(metadata[METADATA_KEY])
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _check_layout(path: Path, handle, expected: dict, arch_name) -> None:
    """Names and shapes from the file's header against the network's, before any weight is read."""
    stored = set(handle.keys())
    missing = sorted(set(expected) - stored)
    unexpected = sorted(stored - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match architecture {arch_name}: "
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    for name, tensor in expected.items():
        shape = tuple(handle.get_slice(name).get_shape())
        if shape != tuple(tensor.shape):
            raise CheckpointError(f"{path}: weight {name} has shape {shape}, architecture needs {tuple(tensor.shape)}")


def _weight(path: Path, handle, name: str, dtype: torch.dtype) -> torch.Tensor:
    """One weight as the network's dtype; NaN or infinite values (or a negative BatchNorm variance) refused."""
    try:
        tensor = handle.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt weight {name} ({error})") from None
    tensor = tensor.to(dtype)
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values")
        if name.endswith("running_var") and (tensor < 0).any():
            raise CheckpointError(f"{path}: weight {name} holds negative variances")
    return tensor
