"""Small PyTorch modules for the tests, with weights drawn from a local generator: instances are
initialised concurrently on their own threads, so the process-wide seed would interleave."""

from typing import Any

import torch


def _fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module


class TwoHeads(torch.nn.Module):
    """(x, y) -> (x @ W, x + y): two inputs, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3, bias=False)

    def forward(self, x: Any, y: Any) -> Any:
        return self.linear(x), x + y


def make_mlp() -> torch.nn.Module:
    return _fill(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), 0)


def make_two_heads() -> torch.nn.Module:
    return _fill(TwoHeads(), 1)
