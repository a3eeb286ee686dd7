"""What jfacediag sets for XLA:CPU: memory that is not page-faulted in again every step, and the compiler options of
its jitted steps.

XLA:CPU frees its temporary buffers after each step; glibc's malloc hands every block above 32 MB back to the kernel,
so the next step page-faults them in again, 4 KiB at a time, and the kernel zero-fills each page: ResNet-50 at 224,
batch 8, ~320,000 page faults and ~0.6 s of system time per 1.7 s train step. reexec_with_huge_pages() restarts a
`python -m jfacediag.<entry point>` command once, first thing when the package is imported, with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35, transparent huge pages not "never"): malloc then asks for
2 MiB pages, ~3,000 page faults per step, and memory is still handed back (the same step 1.25 s against 1.68 s;
`python tools/bench_malloc.py`). Not where a GPU or TPU is visible (the steps run there), not with
JFACEDIAG_CPU_MALLOC=0, and not in a script or notebook that imports jfacediag (set GLIBC_TUNABLES before Python
starts there). Keeping freed memory in the heap instead (mallopt: one arena, no mmap, no trimming) was measured
too: 0 faults in some runs, 212,000 faults and 2.25 s per step in others (the heap fragments and grows).

COMPILER_OPTIONS: XLA:CPU computes convolutions with Eigen instead of YNNPACK (dots and reductions stay YNNPACK's):
faster for every convolution this project runs, forward and both gradients (tools/bench_convs.py, README
Benchmark). jit() applies them; JFACEDIAG_CPU_LAYERS=0 turns them off together with the CPU forms of
models/layers.py.
"""
import contextlib
import functools
import glob
import os
import platform
import sys

HUGE_PAGES = "glibc.malloc.hugetlb=1"


def accelerator_visible():
  """A GPU or TPU that JAX would use: JAX_PLATFORMS names one, or an NVIDIA or TPU device file exists."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() not in ("cpu", "")
  return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _wanted():
  return (os.environ.get("JFACEDIAG_CPU_MALLOC", "1") != "0" and sys.platform.startswith("linux")
          and not accelerator_visible())


def huge_pages_on():
  return HUGE_PAGES in os.environ.get("GLIBC_TUNABLES", "").split(":")


def _huge_pages_possible():
  lib, version = platform.libc_ver()
  try:
    if lib != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
      return False
    with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
      return "[never]" not in f.read()
  except (OSError, ValueError):
    return False


def entry_point_argv():
  """The command line when this process is `python [options] -m jfacediag.<module> ...`, still importing the
  package (runpy sets sys.argv[0] to "-m" until the module runs); None otherwise."""
  argv = getattr(sys, "orig_argv", None) or []
  if sys.argv[:1] != ["-m"] or "-m" not in argv[1:]:
    return None
  i = argv.index("-m", 1)
  return argv if i + 1 < len(argv) and argv[i + 1].split(".")[0] == "jfacediag" else None


def reexec_with_huge_pages(argv=None):
  """Restarts a `python -m jfacediag.<module>` command (or the command line `argv`, sys.orig_argv for a tool
  script) with GLIBC_TUNABLES=...:glibc.malloc.hugetlb=1 (module docstring); returns (doing nothing) anywhere
  else, once it is set, or where glibc or the kernel cannot."""
  argv = entry_point_argv() if argv is None else argv
  if argv is None or not _wanted() or huge_pages_on() or not _huge_pages_possible():
    return
  tunables = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES", ""), HUGE_PAGES) if t)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], dict(os.environ, GLIBC_TUNABLES=tunables))


def cpu_layers():
  """The CPU forms (layers.py) and COMPILER_OPTIONS are on unless JFACEDIAG_CPU_LAYERS=0."""
  return os.environ.get("JFACEDIAG_CPU_LAYERS", "1") != "0"


COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
_TARGET = []  # The platform of the devices a step is being traced for (jit below); the host's backend outside.


@contextlib.contextmanager
def tracing_for(platform):
  """Layers traced inside take the forms of `platform` ("cpu", "gpu", "tpu"), whatever the host runs."""
  _TARGET.append(platform)
  try:
    yield
  finally:
    _TARGET.pop()


def target_platform():
  """The platform the code being traced will run on: the one jit() was given, else the host's backend."""
  if _TARGET:
    return _TARGET[-1]
  import jax  # pylint: disable=g-import-not-at-top  (this module is imported before JAX starts)
  return jax.default_backend()


def compiler_options(platform=None):
  """jax.jit(..., compiler_options=) for a jfacediag step: COMPILER_OPTIONS on CPU, None elsewhere."""
  return dict(COMPILER_OPTIONS) if (platform or target_platform()) == "cpu" and cpu_layers() else None


def jit(fn, platform=None, **kwargs):
  """jax.jit(fn, **kwargs) for the devices of `platform` (a mesh's: sharding.platform(mesh); default the host's
  backend): every jitted model step of jfacediag is built here. The target, not the host, decides the code path:
  fn is traced under tracing_for(platform), so the CPU forms of models/layers.py and COMPILER_OPTIONS reach a
  program only when it will run on CPU (a TPU step compiled ahead of time on a CPU host gets neither)."""
  import jax  # pylint: disable=g-import-not-at-top
  platform = platform or jax.default_backend()

  @functools.wraps(fn)
  def traced(*args, **kw):
    with tracing_for(platform):
      return fn(*args, **kw)
  return jax.jit(traced, compiler_options=compiler_options(platform), **kwargs)


def describe():
  """What this process runs with, for logs and the benchmark's JSON."""
  if huge_pages_on():
    return "huge pages (GLIBC_TUNABLES glibc.malloc.hugetlb=1)"
  return "glibc's defaults"
