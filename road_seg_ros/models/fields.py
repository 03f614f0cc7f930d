"""Bounds on every architecture field, checked before a network is built.

A checkpoint's metadata and a training config both name an architecture; a
value such as 100000 dilations or 10^9 classes would otherwise be built as
asked (gigabytes, minutes). Each failure is a ValueError of one line naming
the field, what it must be and what it got.
"""

import reprlib

NUM_CLASSES = (1, 255)  # class ids are published as mono8
CHANNELS = (2, 1024)  # the decoder halves its width for the pyramid branches
DILATION = (1, 64)  # padding grows with the dilation: beyond this only padding is convolved
BLOCKS = (1, 16)  # residual blocks per stage; the medium student has 8
BRANCHES = (1, 8)  # pyramid or ASPP branches

_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = 40


def short(value) -> str:
    """``repr(value)``, cut short: a hostile value may be a list of a million items."""
    return _SHORT.repr(value)


def integer(low: int, high: int):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {short(value)}")

    return check


def integers(count: tuple, low: int, high: int):
    """A list of ``count[0]``..``count[1]`` integers, each in [low, high]."""

    def check(name, value):
        in_range = integer(low, high)
        if not isinstance(value, (list, tuple)) or not count[0] <= len(value) <= count[1]:
            raise ValueError(
                f"{name} must be a list of {count[0]} to {count[1]} integers in [{low}, {high}], got {short(value)}"
            )
        for item in value:
            in_range(f"each of {name}", item)

    return check


def choice(*choices):
    def check(name, value):
        if not isinstance(value, type(choices[0])) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {short(value)}")

    return check


def subset(*choices):
    """A list of distinct items, each one of ``choices`` (possibly empty)."""

    def check(name, value):
        ok = isinstance(value, (list, tuple)) and len(set(value)) == len(value)
        if not ok or not all(
            isinstance(item, int) and not isinstance(item, bool) and item in choices for item in value
        ):
            raise ValueError(
                f"{name} must be a list of distinct items of {', '.join(map(str, choices))}, got {short(value)}"
            )

    return check


def boolean(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {short(value)}")


def check_fields(kind: str, checks: dict, values: dict) -> None:
    """Runs ``checks[field]`` on every value; unknown fields are refused by name."""
    unknown = sorted(str(name) for name in set(values) - set(checks))
    if unknown:
        raise ValueError(f"unknown {kind} field(s): {short(unknown)}; known: {', '.join(checks)}")
    for name, value in values.items():
        checks[name](f"{kind} field {name!r}", value)
