"""The shipped checkpoint reproduces the mIoU its model card states, on val and on test (issue 15).

The evaluation is the card's own command (single scale, PyTorch, CPU): a retrained or replaced
`models/student.safetensors` without an updated card, or a change to preprocessing or the metric, fails here.
"""

import re
from pathlib import Path

import pytest

from road_seg_ros.training.evaluate import parse_args, run

MODEL_CARD = Path(__file__).resolve().parent.parent / "models" / "README.md"


def card_miou() -> dict:
    """The card's accuracy row, `| **mIoU** | **val** | **test** |`."""
    match = re.search(r"^\| \*\*mIoU\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\* \|$", MODEL_CARD.read_text(), re.M)
    assert match, f"{MODEL_CARD} has no '| **mIoU** | **val** | **test** |' row"
    return {"val": float(match[1]), "test": float(match[2])}


@pytest.mark.parametrize("split", ["val", "test"])
def test_shipped_model_reproduces_its_card(split):
    result = run(parse_args(["--split", split, "--device", "cpu", "--backend", "torch"]))
    assert result["checkpoint"].endswith("models/student.safetensors")
    assert result["miou"] == pytest.approx(card_miou()[split], abs=0.05)
