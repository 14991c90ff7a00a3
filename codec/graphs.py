"""CUDA graphs of the decoder's one-step DiT (and of the compiled DC-AE decoder): the same kernels,
launched by one call.

At 1024² the DiT step (SANA blocks through diffusers) costs ~8 ms of GPU time but ~35 ms of host time
launching ~1,000 small kernels (docs/BENCHMARKS.md, torch.profiler on an H200); the compiled DC-AE
decoder at 1024² ran in 30 ms, 23 ms replayed from a graph (tools/dcae_variants.py). A CUDA graph records
the launches once per input shape and replays them, so the host no longer sets the pace. Inference
only; outputs are copied out of the graph's memory before they are returned.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GraphCache", "GraphPool"]

Key = tuple[tuple[tuple[int, ...], torch.dtype], ...]
Entry = tuple[torch.cuda.CUDAGraph, list[Tensor], Tensor]
_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def _side_stream() -> torch.cuda.Stream:
    """The one stream per device on which every capture warms up. cuBLAS keeps a workspace (32 MiB on
    Hopper, allocated through PyTorch's allocator and held for the life of the process) for each stream
    it has run on, so a fresh stream per capture left one such workspace behind for every graph."""
    device = torch.cuda.current_device()
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream()
    return _SIDE_STREAMS[device]


class GraphPool:
    """One CUDA-graph memory pool for several ``GraphCache``s (``GraphCache(..., pool=...)``): the memory
    held is then the largest graph's working set plus every graph's output, not the sum of the working
    sets. Safe for the caches' replays for the same reason as ``share_pool`` within one cache: they run
    one at a time on one stream, inputs are copied in and each output is copied out around its replay."""

    def __init__(self) -> None:
        self.handle: tuple[int, int] | None = None

    def get(self) -> tuple[int, int]:
        if self.handle is None:
            self.handle = torch.cuda.graph_pool_handle()
        return self.handle


class GraphCache:
    """``fn(*tensors) -> Tensor`` replayed from a CUDA graph captured per input signature (LRU).

    The first call with a new signature warms ``fn`` up on a side stream and captures it; a capture
    that fails (an op that syncs with the host, say) turns the cache off for good and ``fn`` runs
    eagerly from then on, with one warning. ``fn`` must depend on its tensor arguments only.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        max_graphs: int = 4,
        name: str = "graph",
        share_pool: bool = False,
        pool: GraphPool | None = None,
    ):
        self.fn, self.max_graphs, self.name = fn, max_graphs, name
        self.graphs: OrderedDict[Key, Entry] = OrderedDict()
        # share_pool: every graph of this cache allocates from one memory pool, so the memory held is
        # the largest graph's working set, not the sum over shapes. Safe because replays run one at a
        # time on one stream and each output is copied out before the next replay can overwrite it.
        # pool: that pool is shared with the other caches given the same GraphPool (implies share_pool).
        self.share_pool = share_pool or pool is not None
        self.pool_group = pool
        self.pool: tuple[int, int] | None = None
        self.enabled = torch.cuda.is_available()
        self.captures = 0

    def __call__(self, *inputs: Tensor) -> Tensor:
        if not self.enabled or not all(t.is_cuda for t in inputs):
            return self.fn(*inputs)
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(inputs)
            if entry is None:
                return self.fn(*inputs)
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, inputs, strict=True):
            dst.copy_(src)
        graph.replay()
        return static_out.clone()

    def _capture(self, inputs: tuple[Tensor, ...]) -> Entry | None:
        static_in = [t.clone() for t in inputs]
        try:
            side = _side_stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph (allocator, cuDNN/cuBLAS handles)
                    self.fn(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.share_pool and self.pool is None:
                self.pool = self.pool_group.get() if self.pool_group else torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool if self.share_pool else None):
                static_out = self.fn(*static_in)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
            self.enabled = False
            self.graphs.clear()
            print(f"ditic: {self.name}: CUDA graph capture failed, running eagerly ({e})", file=sys.stderr)
            return None
        self.captures += 1
        return graph, static_in, static_out
