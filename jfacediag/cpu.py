"""What jfacediag sets for XLA:CPU: a malloc that keeps freed memory, and the compiler options of its jitted steps.

- keep_freed_memory(): glibc's malloc returns every block above 32 MB to the kernel when it is freed, and hands out
  thread arenas that it trims; XLA:CPU frees its temporary buffers after each step, so the next step page-faults and
  the kernel zero-fills them again: ResNet-50 at 224, batch 8, ~300,000 page faults and ~0.55 s of system time per
  1.7 s train step. With one arena, no mmap and no trimming, the heap keeps those pages (0 faults, ~15 ms system
  time); the process keeps its peak memory until it exits. Applied when jfacediag is imported, which must come
  before JAX starts its CPU client (its threads keep the arenas they already have). JFACEDIAG_CPU_MALLOC=0 leaves
  malloc alone. `python tools/bench_malloc.py` measures both.
- COMPILER_OPTIONS: XLA:CPU computes convolutions with Eigen instead of YNNPACK (dots and reductions stay
  YNNPACK's): faster for every 3x3 convolution this project trains, forward and both gradients (README Benchmark).
  JFACEDIAG_CPU_LAYERS=0 turns this off together with the CPU forms of layers.py.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h).
_APPLIED = []


def keep_freed_memory():
  """mallopt: one arena, no mmap, no trimming (module docstring). Returns True when applied; a no-op after the first
  call, off Linux/glibc, and with JFACEDIAG_CPU_MALLOC=0."""
  if _APPLIED or os.environ.get("JFACEDIAG_CPU_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
    return bool(_APPLIED)
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other C libraries have no mallopt.
    return False
  # The trim threshold is a size_t that mallopt takes as an int: -1 is the largest value (never trim).
  ok = all(mallopt(param, value) == 1 for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
  _APPLIED.append(ok)
  return ok


def cpu_layers():
  """The CPU forms (layers.py) and COMPILER_OPTIONS are on unless JFACEDIAG_CPU_LAYERS=0."""
  return os.environ.get("JFACEDIAG_CPU_LAYERS", "1") != "0"


COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def compiler_options():
  """jax.jit(..., compiler_options=) for a jfacediag step: COMPILER_OPTIONS on CPU, None elsewhere."""
  import jax  # pylint: disable=g-import-not-at-top  (this module is imported before JAX starts)
  return dict(COMPILER_OPTIONS) if jax.default_backend() == "cpu" and cpu_layers() else None


def jit(fn, **kwargs):
  """jax.jit(fn, **kwargs) with compiler_options(): every jitted model step of jfacediag is built here."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
