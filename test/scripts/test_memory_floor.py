"""scripts/memory_floor.py: the bytes a forward pass moves, counted per operation."""

import importlib.util

import pytest
import torch
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("memory_floor", REPO_ROOT / "scripts" / "memory_floor.py")
memory_floor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_floor)


def test_a_convolution_moves_its_input_weights_and_output_once():
    conv = torch.nn.Conv2d(3, 8, kernel_size=1)
    counter = memory_floor.count(conv, (4, 5))
    elements = 3 * 4 * 5 + 8 * 3 + 8 + 8 * 4 * 5  # input, weight, bias, output
    assert counter.per_op == {"convolution": (1, 2 * elements)}
    assert counter.operations == 1 and counter.bytes == 2 * elements


def test_views_move_nothing_and_activations_scale_with_the_frame(tiny_checkpoint, capsys):
    layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten())
    assert set(memory_floor.count(layers, (8, 8)).per_op) == {"convolution", "relu"}  # flatten is a view
    memory_floor.main([str(tiny_checkpoint), "--sizes", "64x96", "128x192"])
    small, large = (line.split(", ")[1] for line in capsys.readouterr().out.splitlines())
    megabytes = [float(text.split()[0]) for text in (small, large)]
    assert megabytes[1] == pytest.approx(4 * megabytes[0], rel=0.1)  # activations dominate: 4x the pixels
