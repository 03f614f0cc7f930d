"""Average checkpoints of one architecture into one (a uniform "model soup"): ``road-seg-average A B --out C``.

Runs fine-tuned from the same weights with different seeds stay in one basin, so the mean of their weights
is a network of its own, as fast as each, often more accurate than either and more robust to a shift of
domain (Wortsman et al., "Model soups", ICML 2022). Every floating-point tensor is averaged, BatchNorm
running statistics included; integer buffers (BatchNorm's step counts) are taken from the first checkpoint.
The result's metadata is the first checkpoint's, with ``training`` naming what was averaged.
"""

import argparse
import sys
from pathlib import Path

import torch

from ..core.checkpoint import CheckpointError, ModelInfo, load_checkpoint, save_checkpoint
from ..core.cli import exit_with

PROG = "road-seg-average"
# Metadata that must match for the average to be used like any one of them.
SAME_FIELDS = ("arch", "class_names", "class_colors", "mean", "std", "input_size")


def average_checkpoints(paths: list[Path]) -> tuple[torch.nn.Module, list[ModelInfo]]:
    """The uniform average of the checkpoints at ``paths``, and each one's metadata in order; CheckpointError if
    they differ in any SAME_FIELDS."""
    model, info = load_checkpoint(paths[0])
    infos = [info]
    total = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for path in paths[1:]:
        other, other_info = load_checkpoint(path)
        for name in SAME_FIELDS:
            if getattr(other_info, name) != getattr(info, name):
                raise CheckpointError(f"{path}: its {name} differs from {paths[0]}'s; only like models average")
        infos.append(other_info)
        for name, tensor in other.state_dict().items():
            if tensor.is_floating_point():
                total[name] += tensor
    model.load_state_dict(
        {name: tensor / len(paths) if tensor.is_floating_point() else tensor for name, tensor in total.items()}
    )
    return model, infos


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT", help="two or more, same architecture")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (.safetensors)")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints to average")
    return args


def average_from_args(args: argparse.Namespace) -> Path:
    model, infos = average_checkpoints(args.checkpoints)
    members = [{"path": str(path), **info.training} for path, info in zip(args.checkpoints, infos)]
    info = infos[0]
    info.description = f"uniform average of {len(args.checkpoints)} checkpoints ({info.description})"
    info.training = {
        "role": info.training.get("role"),
        "command": " ".join([PROG, *map(str, args.checkpoints), "--out", str(args.out)]),
        "average_of": members,
    }
    return save_checkpoint(args.out, model, info)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        path = average_from_args(args)
    except (CheckpointError, OSError) as error:
        exit_with(PROG, error)
    print(f"wrote {path}, the average of {len(args.checkpoints)} checkpoints", file=sys.stderr)


if __name__ == "__main__":
    main()
