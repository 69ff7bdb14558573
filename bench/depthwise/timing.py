"""How the depthwise benchmarks time a call: GPU time from CUDA-graph replays over rotating input sets.

Small layers fit in the L2 (50 MB on an H100), so each timed run cycles through several independent input sets
(at least ROTATE_BYTES of inputs together) and the time is per call:
    graph_us: the calls captured in one CUDA graph and replayed: GPU time, no Python or launch overhead;
              median of REPLAYS replays, timed with CUDA events;
    eager_us: the same calls from Python: what an uncompiled training step pays, launches included.
(triton.testing.do_bench is not used: its L2 flush leaves ~50 MB of dirty lines that the timed kernel must
write back, which counts against small layers.)
"""

import math

import torch

ROTATE_BYTES = 200 << 20  # 4x the H100's L2
MAX_SETS = 32
REPLAYS = 10


def _events_median_us(run, calls: int) -> float:
    times = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[len(times) // 2]


def graph_us(call, n_sets: int) -> float:
    """Median µs per call of call(i) for i in range(n_sets), captured in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as autograd inside a capture needs
        for _ in range(2):
            for i in range(n_sets):
                call(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n_sets):
            call(i)
    us = _events_median_us(graph.replay, n_sets)
    del graph
    return us


def eager_us(call, n_sets: int) -> float:
    """Median µs per call of call(i) for i in range(n_sets), launched from Python."""
    for i in range(n_sets):
        call(i)

    def run():
        for i in range(n_sets):
            call(i)

    return _events_median_us(run, n_sets)


def n_sets_for(bytes_per_call: int) -> int:
    """Input sets to rotate through so that together they hold at least ROTATE_BYTES."""
    return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / bytes_per_call)))
