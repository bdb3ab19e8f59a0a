"""The CPU's rough float32 peak: a large numpy (OpenBLAS) matmul, GFLOP/s.

Run by the orchestrator as a subprocess per thread count, with OPENBLAS_NUM_THREADS set and
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from *that subprocess only* (this machine may
pin an old core type for safety, which would understate the peak). Reports the kernel
OpenBLAS actually picked, as threadpoolctl sees it (when installed).

    python bench/peak.py THREADS
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:  # mypy checks bench/ as a package
    from bench import wcommon
else:  # run as a script: bench/ is on sys.path (above)
    import wcommon


def main() -> int:
    threads = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    import numpy as np

    info = None
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        info = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for d in threadpool_info()]
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 12 and (len(times) < 3 or time.perf_counter() - start < 3.0):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    wcommon.emit({
        "threads": threads, "n": n, "numpy": np.__version__, "blas": info,
        "gflops_best": flop / min(times) / 1e9,
        "gflops_median": flop / wcommon.percentile(times, 50) / 1e9,
        "env_openblas": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
