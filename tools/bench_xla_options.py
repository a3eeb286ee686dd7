r"""Times the trainer's steps under jfacediag's XLA compiler options and under the same options changed, in one process.

  python tools/bench_xla_options.py --set xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED \
      [--model resnet50] [--size 224] [--batch 8] [--steps 10]

Both sides are jfacediag.bench's steps (bench.bench_jax), compiled once with cpu.COMPILER_OPTIONS and once with
those options updated by each --set KEY=VALUE (true/false and integers are read as such, anything else as a
string); they take turns as in the benchmark (bench._race), so the machine's drift reaches both alike. Prints,
per step (features, train): each side's XLA temporaries, median, CPU use per timed step, and the ratio
defaults / changed (above 1: the change is faster) with its round-by-round range. Levers measured with it are in
the README's Benchmark section ("Levers measured and not kept").
"""
import argparse
import contextlib
import sys

import jax

from jfacediag import bench, cli_front, cpu, models, steps

# The benchmark's turns and its ways of printing CPU use, so that this tool's figures read as the benchmark's.
_race, _cpu, _spread, _temps = bench._race, bench._cpu, bench._spread, bench._temps  # pylint: disable=protected-access


def _value(text):
  low = text.lower()
  if low in ("true", "false"):
    return low == "true"
  try:
    return int(text)
  except ValueError:
    return text


def parse(argv=None):
  ap = argparse.ArgumentParser(prog="python tools/bench_xla_options.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", required=True,
                  help="an XLA compiler option to change (repeatable), e.g. xla_cpu_enable_fast_math=true")
  ap.add_argument("--model", default="resnet50", help=f"backbone: {', '.join(models.names())}")
  ap.add_argument("--size", type=int, default=224)
  ap.add_argument("--batch", type=int, default=8, help="global batch")
  ap.add_argument("--classes", type=int, default=5)
  ap.add_argument("--steps", type=int, default=10, help="timed steps per side (the median is reported)")
  ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
  ap.add_argument("--dtype", default="float32", choices=sorted(steps.DTYPES), help="compute dtype")
  args = ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))
  args.changes = {}
  for item in args.set:
    key, eq, text = item.partition("=")
    if not eq or not key.startswith("xla_"):
      ap.error(f"--set takes KEY=VALUE with an XLA option name (xla_...), got {item!r}")
    args.changes[key] = _value(text)
  if args.steps < 1 or args.warmup < 0:
    ap.error(f"--steps must be at least 1 and --warmup at least 0 (got {args.steps} and {args.warmup})")
  return args


@contextlib.contextmanager
def compiler_options(options):
  """cpu.COMPILER_OPTIONS replaced by `options` while the steps are built (cpu.jit reads them then)."""
  saved = dict(cpu.COMPILER_OPTIONS)
  cpu.COMPILER_OPTIONS.clear()
  cpu.COMPILER_OPTIONS.update(options)
  try:
    yield
  finally:
    cpu.COMPILER_OPTIONS.clear()
    cpu.COMPILER_OPTIONS.update(saved)


def build(args, options):
  """bench.bench_jax's steps under `options`; XLA's refusal of an option is reported with the options tried."""
  with compiler_options(options):
    try:
      facts, runners = bench.bench_jax(args, flops=False)
    except jax.errors.JaxRuntimeError as e:
      sys.exit(f"XLA did not compile the steps with {options}: {type(e).__name__}: {e}")
  return facts, runners


def main(argv=None):
  args = parse(argv)
  if argv is None:  # Run as a script: restart it with the benchmark's memory setting (`python -m jfacediag.*` gets it).
    cpu.reexec_with_huge_pages(sys.orig_argv)
  if jax.default_backend() != "cpu" or not cpu.cpu_layers():
    sys.exit("this compares jfacediag's CPU compiler options: run it on CPU without JFACEDIAG_CPU_LAYERS=0")
  sides = {"defaults": dict(cpu.COMPILER_OPTIONS), "changed": dict(cpu.COMPILER_OPTIONS, **args.changes)}
  for side, options in sides.items():
    print(f"{side}: {options}", flush=True)
  runners = {}
  for side in ("changed", "defaults"):  # The changed options first: an option XLA refuses stops the run early.
    facts, runners[side] = build(args, sides[side])
    print(f"{side}: compiled in {facts['features_compile_s']:.1f} s (features) + {facts['train_compile_s']:.1f} s "
          f"(train){_temps(facts)}", flush=True)
  runners = {side: runners[side] for side in sides}
  medians, used, turns = _race(runners, args.warmup, args.steps)
  print(f"{args.model} {args.size}x{args.size}, batch {args.batch}, {args.dtype}, {args.steps} timed steps per side; "
        f"memory: {cpu.describe()}")
  for what in ("features", "train"):
    for side in sides:
      print(f"  {what:8s} {side:8s} {medians[side][what] * 1e3:9.1f} ms  {_cpu(used[side][what])}")
    ratios = bench.turn_ratios(turns["defaults"][what], turns["changed"][what])
    print(f"  {what:8s} ratio defaults / changed {medians['defaults'][what] / medians['changed'][what]:.3f}"
          f"{_spread(ratios)}  (above 1: the change is faster)")


if __name__ == "__main__":
  main()
