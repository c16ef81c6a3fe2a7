"""Training-step time, memory and arithmetic of the adapters against each other and the physical bound (the
harness behind ``tools/benchmark.py``, and the per-layer route costs behind ``tools/benchmark_layers.py``).
Speed and memory targets live here, as measured ratios, never in timed unit tests."""
from .harness import (CONTROLS, FLOORS, INFER, INPUT_GRAD, SUBSPACE, TRAIN, Settings, Step, build, flop_count,
                      gemm_gflops, live_bytes_peak, peaks_of, run_interleaved, run_sequential, saved_bytes)
from .report import RATIOS, compute_ratios, summary, write

__all__ = ['CONTROLS', 'FLOORS', 'INFER', 'INPUT_GRAD', 'RATIOS', 'SUBSPACE', 'TRAIN', 'Settings', 'Step', 'build',
           'compute_ratios', 'flop_count', 'gemm_gflops', 'live_bytes_peak', 'peaks_of', 'run_interleaved',
           'run_sequential', 'saved_bytes', 'summary', 'write']
