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


def make_conv() -> torch.nn.Module:
    """NCHW 3-channel images -> 4 scores: a convolution, for ``channels_last`` and ``dtype``."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )
    return _fill(net, 2)


#: What each call of a :class:`Sleepy` model saw: (CUDA stream handle, start event, end event).
SLEEPY_CALLS: list[tuple[int, Any, Any]] = []
SLEEPY_CYCLES = 20_000_000  # about 10 ms of GPU time at H200 clocks, in one thread block


class Sleepy(torch.nn.Module):
    """``x * 2`` after a GPU kernel that spins (one thread block, so calls on two streams can run
    side by side); records its stream and CUDA events around its work in :data:`SLEEPY_CALLS`."""

    def forward(self, x: Any) -> Any:
        stream = torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        torch.cuda._sleep(SLEEPY_CYCLES)
        result = x * 2
        end.record(stream)
        SLEEPY_CALLS.append((stream.cuda_stream, start, end))
        return result


def make_sleepy() -> torch.nn.Module:
    return Sleepy()
