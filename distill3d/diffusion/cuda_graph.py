"""CUDA-graph replay of a frozen network's forward pass (inference only).

The world teachers are small U-Nets: one denoise call at batch 8 costs about as much as one at
batch 64 (17 and 27 ms on an H200, benchmarks/RESULTS.md) because the GPU waits on the CPU
launching a few hundred kernels. ``GraphedForward`` records those kernels once per input
signature (shapes and dtypes) with ``torch.cuda.graph`` and afterwards replays the recording:
the inputs are copied into the recorded buffers and one launch runs the whole network.

It falls back to calling the function directly on the CPU, and whenever autograd would have to
see through the call (grad enabled and an input that requires grad). The function must be
pure in its tensor inputs (no CPU synchronisation, no data-dependent control flow), which holds
for a diffusers ``UNet2DConditionModel`` in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Signature = tuple[tuple[tuple[int, ...], torch.dtype], ...]


@dataclass
class _Recording:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    output: Tensor


class GraphedForward:
    """``GraphedForward(fn)(*inputs) == fn(*inputs)``, replayed from a CUDA graph on CUDA inputs.

    One recording per input signature, at most ``max_recordings`` (then calls run eagerly); the
    returned tensor is a copy, so earlier results survive later calls.
    """

    def __init__(self, fn: Callable[..., Tensor], *, warmup_calls: int = 2, max_recordings: int = 8):
        self.fn = fn
        self.warmup_calls = warmup_calls
        self.max_recordings = max_recordings
        self.recordings: dict[Signature, _Recording] = {}

    def __call__(self, *inputs: Tensor) -> Tensor:
        if not self._replayable(inputs):
            return self.fn(*inputs)
        with torch.cuda.device(inputs[0].device):  # capture and replay on the inputs' GPU, not the current one
            return self._replay(inputs)

    def _replay(self, inputs: tuple[Tensor, ...]) -> Tensor:
        signature = tuple((tuple(x.shape), x.dtype) for x in inputs)
        recording = self.recordings.get(signature)
        if recording is None:
            if len(self.recordings) >= self.max_recordings:
                return self.fn(*inputs)
            recording = self.recordings[signature] = self._record(inputs)
        for buffer, x in zip(recording.inputs, inputs):
            buffer.copy_(x)
        recording.graph.replay()
        return recording.output.clone()

    def _replayable(self, inputs: tuple[Tensor, ...]) -> bool:
        if not inputs or not all(isinstance(x, Tensor) and x.is_cuda for x in inputs):
            return False
        if torch.cuda.is_current_stream_capturing():
            return False
        return not (torch.is_grad_enabled() and any(x.requires_grad for x in inputs))

    @torch.no_grad()
    def _record(self, inputs: tuple[Tensor, ...]) -> _Recording:
        buffers = tuple(x.detach().clone() for x in inputs)
        side = torch.cuda.Stream(device=buffers[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream (cuDNN/cuBLAS choices, lazy inits)
            for _ in range(self.warmup_calls):
                self.fn(*buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):  # torch's default capture stream lives on the first GPU used
            output = self.fn(*buffers)
        return _Recording(graph, buffers, output)


__all__ = ["GraphedForward"]
