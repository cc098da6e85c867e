"""fnattr's benchmark suite: ``python -m benchmarks.run`` (see RESULTS.md).

* :mod:`benchmarks.models`: the three benchmark models (S, M, L) and their inputs.
* :mod:`benchmarks.floor`: hand-written minimal PyTorch for every method (the
  "floor" every candidate is compared with), verified against Captum.
* :mod:`benchmarks.run`: the runner (checks, interleaved timing, memory, report).
"""
