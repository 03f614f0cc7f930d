"""Gates for fault injection: code injected into a node process stops at a gate and says so on its output; it
goes on only when the test opens the gate. The test then knows where the node is instead of guessing with a
sleep (a worker busy with a frame, a decode in progress)."""

import time
from pathlib import Path

NODE_GATE_TIMEOUT_S = 120.0  # an injected gate nobody opens lets the node go on after this long


def gate_code(folder: Path) -> str:
    """Python source defining ``gate(name)`` in a node process: prints ``gate NAME: waiting`` and waits until the
    test opens that gate (a file in ``folder``), at most NODE_GATE_TIMEOUT_S."""
    return f"""
import pathlib as _pathlib
import time as _time
def gate(name):
    print(f"gate {{name}}: waiting", flush=True)
    opened = _pathlib.Path({str(folder)!r}) / name
    deadline = _time.monotonic() + {NODE_GATE_TIMEOUT_S}
    while not opened.exists() and _time.monotonic() < deadline:
        _time.sleep(0.01)
    opened.unlink(missing_ok=True)
"""


class Gates:
    """The test's side of the gates injected with ``gate_code(folder)`` into one node."""

    def __init__(self, folder: Path, node):
        self.folder, self.node = folder, node
        self.passed = {}  # gate name -> times opened

    def reached(self, name: str, timeout: float = 60.0) -> None:
        """Until the node waits at gate ``name`` (once more than it has been opened)."""
        deadline = time.monotonic() + timeout
        while self.node.output().count(f"gate {name}: waiting") <= self.passed.get(name, 0):
            assert time.monotonic() < deadline and self.node.process.poll() is None, self.node.log_tail()
            time.sleep(0.05)

    def open(self, name: str) -> None:
        (self.folder / name).touch()
        self.passed[name] = self.passed.get(name, 0) + 1
