"""Command-line pieces every tool shares: the engine's flags, and the one-line exit on a bad input."""

import argparse
import math
import sys

from .backends import BACKENDS
from .files import one_line
from .options import DEFAULTS, PRECISIONS, THREAD_LIMITS, EngineOptions, device_problem


def whole_number(minimum: int, maximum: int | None = None):
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``); the error names both."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (NaN and infinity refused: a wait on them never ends)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def device_argument(text: str) -> str:
    """A device name (auto, cuda, cpu, cuda:N), for argparse's ``type``."""
    if problem := device_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


# flag -> (EngineOptions field, help, argparse options)
ENGINE_FLAGS = {
    "checkpoint": ("checkpoint", "model (.safetensors)", {"metavar": "CKPT"}),
    "device": ("device", "inference device: auto, cuda, cpu or cuda:N", {"type": device_argument, "metavar": "DEVICE"}),
    "precision": ("precision", "inference precision; auto: the fastest accurate one", {"choices": PRECISIONS}),
    "backend": ("backend", "inference runtime; auto: the fastest installed", {"choices": BACKENDS}),
    "threads": (
        "num_threads",
        "CPU threads for inference; 0: the runtime's",
        {"type": whole_number(*THREAD_LIMITS), "metavar": "N"},
    ),
    "cuda-compile": (
        "cuda_compile",
        "torch.compile the network on CUDA (the first frame waits for the compiler)",
        {"action": argparse.BooleanOptionalAction},
    ),
    "keep-aspect": (
        "keep_aspect",
        "run each frame at the model's input height and its own aspect ratio; --no-keep-aspect: stretch it",
        {"action": argparse.BooleanOptionalAction},
    ),
}


def add_engine_arguments(parser: argparse.ArgumentParser, defaults: EngineOptions | None = DEFAULTS, flags=None):
    """--checkpoint, --device, --precision, --backend, --threads, --cuda-compile, --keep-aspect (or those in
    ``flags``), with the node's defaults.

    ``defaults`` None leaves them unset, for tools whose defaults come from a params file.
    """
    for flag in flags or ENGINE_FLAGS:
        field, text, options = ENGINE_FLAGS[flag]
        if defaults is None:
            value, shown = None, "the params file's"
        elif field == "checkpoint":
            value, shown = None, "the shipped student"
        else:
            value = shown = getattr(defaults, field)
        parser.add_argument(f"--{flag}", default=value, help=f"{text} (default: {shown})", **options)


def given_engine_flags(args) -> dict:
    """The engine flags set on the command line, as EngineOptions fields."""
    given = {field: getattr(args, flag.replace("-", "_"), None) for flag, (field, _, _) in ENGINE_FLAGS.items()}
    return {field: value for field, value in given.items() if value is not None}


def engine_options(args, base: EngineOptions = DEFAULTS) -> EngineOptions:
    """``base`` with the engine flags the user gave."""
    return base.with_changes(**given_engine_flags(args))


def exit_with(prog: str, error) -> None:
    """Exits with status 1 and one line, ``prog: reason``, on stderr."""
    sys.exit(f"{prog}: {one_line(error)}")


def parse_size(text: str) -> tuple:
    """``HEIGHTxWIDTH`` (e.g. 360x480) as (height, width), for argparse's ``type``; at least 32x32."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 360x480, got {text!r}") from None
    if min(height, width) < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return height, width
