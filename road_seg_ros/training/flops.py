"""Parameter and FLOP counts, measured by torch's own FLOP counter.

GFLOPs here count a multiply-add as 2 FLOPs (torch.utils.flop_counter's
convention); many segmentation papers report multiply-adds (GMACs) as
"GFLOPs", which is half our number.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@torch.no_grad()
def count_gflops(model: torch.nn.Module, input_size, device="cpu", dtype=torch.float32) -> float:
    """FLOPs of one forward pass at batch 1 and ``input_size`` (height, width), in units of 1e9."""
    height, width = input_size
    was_training = model.training
    model.eval()
    sample = torch.zeros(1, 3, height, width, device=device, dtype=dtype)
    with FlopCounterMode(display=False) as counter:
        model(sample)
    model.train(was_training)
    return counter.get_total_flops() / 1e9
