"""How a host-side qmtgan process allocates memory: settings made once, at its start, for the
large short-lived arrays every stage makes (a 12-band scene is hundreds of MB in float32).

- TensorFlow takes each large tensor from the C library's malloc, which maps fresh pages for
  it and unmaps them when it dies: a training step of a 512 x 512 x 12 generator then spends
  as much time in the kernel's page faults as in its convolutions. TensorFlow's own
  best-fit-with-coalescing allocator (the one it uses on GPUs) keeps what it has mapped and
  reuses it. The switch is read once, when TensorFlow makes its CPU allocator
  (core/common_runtime/process_state.cc), so it is set before TensorFlow is imported.
- numpy's large temporaries go the same way, and numpy asks for transparent huge pages on
  each, which the kernel compacts memory for on the first touch. glibc's malloc is told to
  keep freed memory for reuse (mallopt: mmap threshold, trim threshold, top pad) and numpy not
  to ask for huge pages: the same pages then serve the next array of the same size.

A value the user set in the environment wins for TensorFlow's switches; `install` does nothing
more off glibc.
"""

from __future__ import annotations

import ctypes
import os

BFC_SWITCH = "TF_CPU_ALLOCATOR_USE_BFC"
GPU_GROWTH_SWITCH = "TF_FORCE_GPU_ALLOW_GROWTH"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20     # glibc's largest: blocks up to this come from the reusable heap
_TRIM_THRESHOLD = 2**31 - 1    # never hand freed heap memory back to the kernel
_TOP_PAD = 1 << 30             # grow the heap in large steps (address space, not resident memory)
_installed = False


def install() -> None:
    """Once per process, before TensorFlow is imported and large arrays are made."""
    global _installed
    if _installed:
        return
    _installed = True
    os.environ.setdefault(BFC_SWITCH, "true")
    # on a GPU, each process takes the memory it uses instead of all of it at start: the
    # demo's stages run TensorFlow in several processes
    os.environ.setdefault(GPU_GROWTH_SWITCH, "true")
    process = ctypes.CDLL(None)  # the symbols already loaded: no library search (ldconfig) at start-up
    if not hasattr(process, "mallopt") or not hasattr(process, "gnu_get_libc_version"):
        return
    for parameter, value in ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                             (_M_TOP_PAD, _TOP_PAD)):
        process.mallopt(parameter, value)
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)
