"""
How the scripts put PyTorch on the machine's cores. Debian's PyTorch has two thread pools: its
own operators run on OpenMP threads, and its matrix products call OpenBLAS, which keeps a pool
of its own (one thread per core unless told otherwise). With both pools at two threads on two
cores, the threads of one pool that wait spin on the cores the other needs: a third of the
process's CPU time went to the kernel, and every step took more than twice as long. Measured
on this 2-core machine, PyTorch's threads at 2 (what the scripts had set) against one pool:

                                      both pools at 2    OpenBLAS at 1 (use_cores)
  video preset, a micro-batch of 4    5.45 s             1.75-2.32 s (sys 0.02-0.05 s)
  demo preset (`fast`), a step of 16  11.0-14.2 s        5.1-6.8 s

(forward and backward, training paused; PyTorch at 1 thread with OpenBLAS at 2, or both at 2 with
OMP_WAIT_POLICY=PASSIVE, took about as long, but keep the kernel busy 0.7-1.1 s a micro-batch:
OpenBLAS's spinning, which would take cores from anything else the machine runs.)
"""
import ctypes

import torch


def use_cores(threads: int) -> None:
    """PyTorch's operators on `threads` threads, OpenBLAS's matrix products on the calling thread."""
    torch.set_num_threads(threads)
    try:
        ctypes.CDLL("libblas.so.3").openblas_set_num_threads(1)
    except (OSError, AttributeError):
        pass  # not OpenBLAS (another BLAS keeps its own defaults)


def bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16, as oneDNN uses under
    PyTorch's CPU autocast); elsewhere bfloat16 is emulated. Read from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
