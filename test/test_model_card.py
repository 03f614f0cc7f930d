"""The shipped checkpoint reproduces the test mIoU its model card states.

The evaluation is the card's own command (single scale, PyTorch, CPU): a retrained or replaced
`models/student.safetensors` without an updated card, or a change to preprocessing or the metric, fails here.
(The card's val column is the train-only selection run's: the shipped checkpoint was trained on val.)
"""

import re
from pathlib import Path

import pytest

from road_seg_ros.training.evaluate import evaluate_from_args, parse_args

MODEL_CARD = Path(__file__).resolve().parent.parent / "models" / "README.md"


def card_test_miou() -> float:
    """From the card's accuracy row, `| **mIoU** | **val** | **test** |`."""
    match = re.search(r"^\| \*\*mIoU\*\* \| \*\*[\d.]+\*\* \| \*\*([\d.]+)\*\* \|$", MODEL_CARD.read_text(), re.M)
    assert match, f"{MODEL_CARD} has no '| **mIoU** | **val** | **test** |' row"
    return float(match[1])


def test_shipped_model_reproduces_its_card():
    result = evaluate_from_args(parse_args(["--split", "test", "--device", "cpu", "--backend", "torch"]))
    assert result["checkpoint"].endswith("models/student.safetensors")
    assert result["miou"] == pytest.approx(card_test_miou(), abs=0.05)
