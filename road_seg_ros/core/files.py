"""Files written whole or not at all, and errors told in one line."""

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path, suffix: str = ""):
    """A temporary path beside ``path`` for the block to write (ending in ``suffix`` where the writer insists on
    one, e.g. numpy's ``.npy``), renamed onto ``path`` when the block ends and removed if it raises: a reader
    never finds a half-written file under the real name."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def one_line(error) -> str:
    """An exception's text on one line: runtimes' and parsers' messages often span several."""
    return " ".join(str(error).split())
