r"""TPU pre-flight: a run's DTL1 train step and DTL2 feature step compiled for a Cloud TPU topology on this machine,
before anyone pays for the pod. Any Linux host with the `tpu` extra (pip install -e ".[tpu]": the libtpu that
this jax pins) compiles for v4, v5e, v5p and v6e slices up to whole pods; no TPU is needed.

  python -m jfacediag.aot --config configs/dsf/iresnet50_arcface_dtl1.py --topology v5e:2x4 \
      --config.input.batch_size=1024 --config.dtype=bfloat16
  python -m jfacediag.aot --config configs/toy.py --topology v5e:2x2 --max_batch
  python -m jfacediag.aot --config configs/dsf/sface_dtl2.py --topology v5litepod-16   # gcloud's accelerator type

The steps are the ones jfacediag.train builds (steps.make_train_step / make_feature_step: the config's model, head,
optimiser, schedule, dtype, donation and sharding, its global batch split over every chip), lowered with shape
structs only: no weights, no images, nothing allocated. Printed per chip, and written to --json:
- HBM: arguments, outputs (less what donation aliases) and XLA's temporaries, against the chip's capacity:
  FITS or DOES NOT FIT;
- FLOPs and bytes accessed per step and per image (XLA's cost analysis of the compiled program);
- the collectives of the optimised HLO (all-reduce, all-gather, reduce-scatter, ...: count and bytes per step);
- an ESTIMATE of the step time, a roofline from those figures and the chip's data sheet: the larger of FLOPs over
  the bf16 peak and bytes over the HBM bandwidth, plus the collective bytes over the interconnect; from it images/s
  per chip and for the pod and an MFU bound. It is not a measurement: no TPU has run these steps. XLA's own
  `optimal_seconds` is shown beside it only where it is positive and within 100x of the roofline.
--max_batch finds the largest per-chip batch of the train step that fits (doubling, then bisection).

Exit status: 0 when both steps compile and fit, 1 when one does not (the reason in one line), 2 for a mistake on
the command line (one line). launch.sh tpu run calls this first (--no-preflight skips it).
"""
import sys

if __name__ == "__main__":  # --help and command-line mistakes answer before JAX loads.
  from jfacediag import cli_front  # pylint: disable=g-import-not-at-top
  cli_front.preflight("aot", __doc__, ("topology", "max_batch", "json", "train_images", "classes"))

import dataclasses
import json
import math
import os
import re
import time

from absl import app, flags, logging
import jax
import jax.numpy as jnp
from jax._src import config as jax_config  # The compilation cache's switch as a context manager.
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags
import numpy as np

from jfacediag import cli_front, config_check, fileio, models, optim, steps
from jfacediag.models import classifier, ensemble


@dataclasses.dataclass(frozen=True)
class Chip:
  """Data-sheet figures per chip (Google Cloud TPU documentation, checked 2026-12-08)."""
  name: str
  bf16_tflops: float
  hbm_gib: float
  hbm_gbps: float  # HBM bandwidth, GB/s.
  allreduce_gbps: float  # All-reduce bandwidth per chip, GB/s: the pod's all-reduce bandwidth over its chips.


CHIPS = {
    "v4": Chip("TPU v4", 275.0, 32.0, 1200.0, 1.1e6 / 4096),  # 1.1 PB/s over 4,096 chips.
    "v5e": Chip("TPU v5e", 197.0, 16.0, 819.0, 51.2e3 / 256),  # 51.2 TB/s over 256 chips.
    "v5p": Chip("TPU v5p", 459.0, 95.0, 2765.0, 1200.0 / 2),  # Half the bidirectional ICI, as v5e's and v6e's are.
    "v6e": Chip("TPU v6e", 918.0, 32.0, 1638.0, 102.4e3 / 256),  # 102.4 TB/s over 256 chips.
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.-]+\s*=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(", re.M)
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+(?:fn|fnuz)?)?)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
MAX_PER_CHIP = 1 << 14  # --max_batch stops doubling here.


_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


def topology_name(name):
  """A topology name from an accelerator type as gcloud and launch.sh write it (v5litepod-16 -> v5e:4x4,
  v6e-8 -> v6e:2x4, v4-8 and v5p-8, which count TensorCores, -> v4:2x2x1 and v5p:2x2x1); others unchanged."""
  m = re.fullmatch(r"(v5litepod|v5e|v6e|v4|v5p)-(\d+)", name.strip().lower())
  if not m:
    return name
  gen, n = m.group(1).replace("v5litepod", "v5e"), int(m.group(2))
  chips, shapes = (n // 2, _SHAPES_3D) if gen in ("v4", "v5p") else (n, _SHAPES_2D)
  if chips not in shapes:
    raise cli_front.Error(f"--topology {name!r}: no slice of {chips} chips is known; give the topology itself "
                          f"(e.g. {gen}:{next(iter(shapes.values()))})")
  return f"{gen}:{shapes[chips]}"


def topology(name):
  """The TPU devices of a topology name (v5e:2x2, v4:2x2x1, v6e:16x16, ... or an accelerator type such as
  v5litepod-16) and their Chip, without a TPU."""
  name = topology_name(name)
  gen = name.split(":")[0].lower()
  if gen not in CHIPS or ":" not in name:
    raise cli_front.Error(f"--topology {name!r}; expected GENERATION:SHAPE with GENERATION one of "
                          f"{', '.join(CHIPS)} (e.g. v5e:2x4, v4:2x2x1, v6e:16x16)")
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError("the TPU pre-flight needs libtpu, the TPU compiler: pip install -e \".[tpu]\" (about "
                      "200 MB; it installs on a CPU machine)") from e
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  shape = [int(v) for v in re.findall(r"\d+", name.split(":", 1)[1])]
  cores = 2 if gen in ("v4", "v5p") else 1  # TensorCores per chip; jax runs them as one device (megacore).
  kind = {"v5e": "v5litepod", "v6e": "v6e"}.get(gen, gen)
  # libtpu reads these at start; without them it looks for a TPU host and prints a page of warnings.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{kind}-{math.prod(shape) * cores}")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # Compiling only: other pre-flights may run beside it.
  try:
    devices = topologies.get_topology_desc(platform="tpu", topology_name=name,
                                           chip_config_name="megacore" if cores == 2 else "default").devices
  except Exception as e:  # pylint: disable=broad-except  (libtpu's errors name the topology)
    raise ValueError(f"--topology {name!r}: libtpu does not know it ({str(e).splitlines()[0][:200]})") from e
  return devices, CHIPS[gen]


def check_divides(batch, chips, what):
  """Refuses a global batch that does not split evenly over the chips, naming the nearest valid sizes."""
  if batch % chips:
    lo, hi = batch // chips * chips, (batch // chips + 1) * chips
    raise ValueError(f"{what}={batch} does not divide by the topology's {chips} chips; " + (
        f"the nearest valid sizes are {lo} and {hi} ({lo // chips} or {hi // chips} per chip)" if lo else
        f"the smallest valid size is {hi} (1 per chip)"))


def build(config, num_classes):
  """(model, input side) of the config's run, as network.build makes them, without reading any weights."""
  if config.model.backbone == ensemble.NAME:
    raise ValueError("the pre-flight does not build ensembles yet: run it for each member's backbone")
  spec = models.get(config.model.backbone)
  size = spec.preprocessing.at_size(config.model.input_size).input_size
  return classifier.Classifier(spec.make(), num_classes, config.model.head_dropout), size


def lower(config, mesh, model, size, per_chip, train_images, num_classes):
  """The jitted train and feature steps of the run, lowered over `mesh` for a global batch of per_chip x chips."""
  rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  batch = per_chip * mesh.size
  variables = jax.eval_shape(lambda: steps.init_variables(model, config.seed, size))
  steps_per_epoch = train_images / batch
  total = max(1, math.ceil(config.train.epochs * steps_per_epoch))
  lr = optim.schedule(config.optim, steps_per_epoch, total)
  tx = optim.make(config.optim, variables["params"], lr)
  state = jax.eval_shape(lambda v: steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v["batch_stats"], opt_state=tx.init(v["params"]),
      rng=jax.random.key_data(jax.random.PRNGKey(0))), variables)
  on = lambda tree, sharding: jax.tree.map(  # noqa: E731
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)
  dtype = steps.compute_dtype(config.dtype)
  train = steps.make_train_step(model, tx, mesh, num_classes, config.optim.label_smoothing,
                                not config.model.freeze_bn_stats, lr, dtype)
  images = lambda n: jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=split)  # noqa: E731
  index = lambda n: jax.ShapeDtypeStruct((n,), jnp.int32, sharding=split)  # noqa: E731
  lowered_train = train.lower(on(state, rep), {"image": images(batch), "label": index(batch)})
  feats = steps.make_feature_step(model, mesh, dtype)
  eval_batch = config.input.eval_batch_size
  lowered_features = feats.lower(on(variables, rep), images(eval_batch), index(eval_batch))
  return lowered_train, lowered_features


def collectives(hlo_text):
  """{kind: {"count", "bytes"}} of the collectives in an optimised HLO module's text (async pairs counted once)."""
  out = {k: {"count": 0, "bytes": 0} for k in COLLECTIVES}
  for m in _COLLECTIVE.finditer(hlo_text):
    shapes, kind = m.group(1), m.group(2)
    if m.group(3):  # X-start's result is a tuple of (operands, outputs, ...): count its outputs once.
      parts = _SHAPE.findall(shapes)
      parts = parts[len(parts) // 2:] if len(parts) > 1 else parts
    else:
      parts = _SHAPE.findall(shapes)
    out[kind]["count"] += 1
    out[kind]["bytes"] += sum(_BYTES.get(t, 4) * math.prod(int(d) for d in dims.split(",") if d)
                              for t, dims in parts)
  return out


def _cost(compiled):
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def analyse(compiled, chip, chips, per_chip):
  """The pre-flight's figures of one compiled step (a dict, the JSON's)."""
  mem = compiled.memory_analysis()
  args, outs, alias, temps = (int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                              "alias_size_in_bytes", "temp_size_in_bytes"))
  code = int(getattr(mem, "generated_code_size_in_bytes", 0))
  total = args + outs - alias + temps + code
  capacity = int(chip.hbm_gib * 2 ** 30)
  cost = _cost(compiled)
  flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  coll = collectives(compiled.as_text())
  ring = (chips - 1) / chips if chips > 1 else 0.0
  moved = sum(v["bytes"] * (2 * ring if k == "all-reduce" else ring) for k, v in coll.items())
  t_flops, t_hbm = flops / (chip.bf16_tflops * 1e12), accessed / (chip.hbm_gbps * 1e9)
  t_coll = moved / (chip.allreduce_gbps * 1e9)
  step = max(t_flops, t_hbm) + t_coll
  optimal = cost.get("optimal_seconds")
  plausible = optimal is not None and 0 < optimal and step > 0 and step / 100 <= optimal <= step * 100
  return {
      "per_chip_batch": per_chip, "hbm_bytes": {"arguments": args, "outputs": outs, "aliased": alias,
                                               "temporaries": temps, "code": code, "total": total,
                                               "capacity": capacity},
      "fits": total <= capacity, "flops": flops, "bytes_accessed": accessed,
      "flops_per_image": flops / per_chip, "bytes_per_image": accessed / per_chip, "collectives": coll,
      "estimate": {"note": "roofline from XLA's cost analysis and the chip's data sheet; not a measurement",
                   "compute_s": t_flops, "hbm_s": t_hbm, "collective_s": t_coll, "step_s": step,
                   "bound_by": "compute" if t_flops >= t_hbm else "HBM bandwidth",
                   "images_per_s_per_chip": per_chip / step if step else None,
                   "images_per_s_pod": per_chip * chips / step if step else None,
                   "mfu_bound": t_flops / step if step else None},
      "xla_optimal_seconds": optimal if plausible else None, "xla_optimal_seconds_raw": optimal}


class DoesNotFit(RuntimeError):
  """The TPU compiler ran out of HBM for a step."""


def compile_step(lowered, what, name):
  t = time.perf_counter()
  try:
    # No persistent compilation cache: an executable compiled without a TPU client can be neither read nor written.
    with jax_config.enable_compilation_cache(False):
      compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA's message, in one line)
    first = str(e).splitlines()[0][:300]
    if "RESOURCE_EXHAUSTED" in first or "Ran out of memory" in first:
      raise DoesNotFit(f"the {what} does not fit on {name}: {first}") from e
    raise RuntimeError(f"the {what} does not compile for {name}: {first}") from e
  return compiled, time.perf_counter() - t


def _compiled_or_misfit(lowered, what, name, chip, chips, per_chip):
  """(analysis, seconds) of a step; a step the compiler cannot fit in HBM is an analysis with fits=False."""
  try:
    compiled, seconds = compile_step(lowered, what, name)
  except DoesNotFit as e:
    return {"per_chip_batch": per_chip, "fits": False, "compiled": False, "reason": str(e)}, 0.0
  return {**analyse(compiled, chip, chips, per_chip), "compiled": True}, seconds


def preflight(config, name, train_images=1000, num_classes=0, max_batch=False, log=print):
  """Compiles the run of `config` for topology `name`; returns the report (dict). Raises ValueError before any
  compile for a batch that cannot split over the chips."""
  config_check.validate(config)
  name = topology_name(name)
  devices, chip = topology(name)
  chips = len(devices)
  mesh = Mesh(np.array(devices), ("data",))
  check_divides(config.input.batch_size, chips, "input.batch_size")
  check_divides(config.input.eval_batch_size, chips, "input.eval_batch_size")
  num_classes = num_classes or len(config.data.classes) or 2
  model, size = build(config, num_classes)
  per_chip = config.input.batch_size // chips
  log(f"Pre-flight for {name}: {chips} chips ({chip.name}, {chip.hbm_gib:g} GiB HBM each, "
      f"{len({d.process_index for d in devices})} host(s)); {config.model.backbone} at {size}x{size}, "
      f"{config.dtype}, {num_classes} classes; global batch {config.input.batch_size} ({per_chip} per chip).")
  t0 = time.perf_counter()
  lowered_train, lowered_features = lower(config, mesh, model, size, per_chip, train_images, num_classes)
  train, t_train = _compiled_or_misfit(lowered_train, "DTL1 train step", name, chip, chips, per_chip)
  features, t_features = _compiled_or_misfit(lowered_features, "DTL2 feature step", name, chip, chips,
                                             config.input.eval_batch_size // chips)
  report = {"topology": name, "chip": dataclasses.asdict(chip), "chips": chips,
            "hosts": len({d.process_index for d in devices}), "backbone": config.model.backbone,
            "input_size": size, "dtype": config.dtype, "classes": num_classes,
            "global_batch": config.input.batch_size, "train": train, "features": features,
            "compile_s": {"lower": round(time.perf_counter() - t0 - t_train - t_features, 1),
                          "train": round(t_train, 1), "features": round(t_features, 1)}}
  if max_batch:
    report["max_batch"] = largest_batch(config, mesh, model, size, train_images, num_classes, chip, name, log)
  return report


def largest_batch(config, mesh, model, size, train_images, num_classes, chip, name, log):
  """The largest per-chip batch whose train step compiles and fits: doubling from 1, then bisection."""
  def fits(b):
    try:
      lowered, _ = lower(config, mesh, model, size, b, train_images, num_classes)
      compiled, _ = compile_step(lowered, "DTL1 train step", name)
    except RuntimeError as e:  # DoesNotFit, or another refusal of the compiler: too large either way.
      log(f"  batch {b} per chip: {e}")
      return False
    a = analyse(compiled, chip, mesh.size, b)
    log(f"  batch {b} per chip: {_gib(a['hbm_bytes']['total'])} of {chip.hbm_gib:g} GiB: "
        + ("fits" if a["fits"] else "does not fit"))
    return a["fits"]
  lo, hi = 0, 1
  while hi <= MAX_PER_CHIP and fits(hi):
    lo, hi = hi, hi * 2
  if hi > MAX_PER_CHIP:
    return {"per_chip": lo, "power_of_two": lo, "note": f"stopped doubling at {MAX_PER_CHIP}"}
  pow2 = lo
  while hi - lo > max(1, lo // 16):  # Bisection to within 1/16 of the answer.
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return {"per_chip": lo, "power_of_two": pow2, "global": lo * mesh.size}


def _gib(n):
  return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def summary_lines(report):
  """The printed report: per step, HBM with FITS / DOES NOT FIT, costs, collectives, the labelled estimate."""
  out, chips = [], report["chips"]
  for key, what in (("train", "DTL1 train step"), ("features", "DTL2 feature step")):
    r = report[key]
    if not r["compiled"]:
      out.append(f"{what}, {r['per_chip_batch']} images per chip: DOES NOT FIT ({r['reason']}).")
      continue
    h, e = r["hbm_bytes"], r["estimate"]
    out.append(f"{what}, {r['per_chip_batch']} images per chip: HBM {_gib(h['total'])} of {_gib(h['capacity'])} "
               f"per chip: {'FITS' if r['fits'] else 'DOES NOT FIT'} (arguments {_gib(h['arguments'])}, outputs "
               f"{_gib(h['outputs'])} less {_gib(h['aliased'])} donated, temporaries {_gib(h['temporaries'])}).")
    out.append(f"  per chip per step: {r['flops'] / 1e12:.3g} TFLOP, {r['bytes_accessed'] / 1e9:.3g} GB accessed; per "
               f"image {r['flops_per_image'] / 1e9:.3g} GFLOP, {r['bytes_per_image'] / 1e6:.0f} MB.")
    coll = [f"{v['count']} {k} ({v['bytes'] / 1e6:.3g} MB)" for k, v in r["collectives"].items() if v["count"]]
    out.append("  collectives per step: " + (", ".join(coll) if coll else "none") + ".")
    out.append(f"  ESTIMATE (roofline, not a measurement): {e['step_s'] * 1e3:.3g} ms per step (compute "
               f"{e['compute_s'] * 1e3:.3g} ms, HBM {e['hbm_s'] * 1e3:.3g} ms, collectives "
               f"{e['collective_s'] * 1e3:.3g} ms; bound by {e['bound_by']}): {e['images_per_s_per_chip']:,.0f} img/s "
               f"per chip, {e['images_per_s_pod']:,.0f} for the {chips} chips, MFU at most "
               f"{100 * e['mfu_bound']:.0f}%"
               + (f"; XLA's optimal_seconds {r['xla_optimal_seconds'] * 1e3:.3g} ms" if r["xla_optimal_seconds"]
                  else "") + ".")
  c = report["compile_s"]
  out.append(f"Compiled on this host in {c['lower'] + c['train'] + c['features']:.0f} s (train {c['train']:.0f} s, "
             f"features {c['features']:.0f} s).")
  if "max_batch" in report:
    m = report["max_batch"]
    out.append(f"Largest train batch that fits: {m['per_chip']} per chip (power of two: {m['power_of_two']}).")
  return out


def default_json(config_arg, name):
  stem = os.path.splitext(os.path.basename(config_arg.partition(":")[0]))[0]
  return os.path.join("runs", "preflight", f"{stem}-{name.replace(':', '_')}.json")


CHILD = "JFACEDIAG_AOT_CHILD"


def guarded(cmd, env, what):
  """Runs `cmd` (this pre-flight, in a child process) with stdout passed through and stderr kept. libtpu can crash
  outright while compiling (a segmentation fault): then one line says so, the crash log is kept in a file, and the
  exit status is 1, as for any step that does not compile. Otherwise the child's stderr follows and its status is
  returned."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.NamedTemporaryFile("w+", prefix="jfacediag-aot-", suffix=".log", delete=False) as err:
    rc = subprocess.run(cmd, env={**env, CHILD: "1"}, stderr=err, check=False).returncode
    err.seek(0)
    text = err.read()
  if rc >= 0:
    sys.stderr.write(text)
    os.remove(err.name)
    return rc
  import signal  # pylint: disable=g-import-not-at-top
  name = signal.Signals(-rc).name if -rc in signal.Signals.__members__.values() else str(-rc)
  print(f"error: the TPU compiler crashed ({name}) while compiling {what}: a fault of libtpu, not a misfit, so "
        f"this run was not checked (crash log: {err.name}). Try another per-chip batch or topology.", file=sys.stderr)
  return 1


def main(argv):
  del argv
  if os.environ.get(CHILD) != "1":  # The compile runs in a child, so that a crash of libtpu still ends in one line.
    f = flags.FLAGS
    sys.exit(guarded([sys.executable, "-m", "jfacediag.aot", *sys.argv[1:]], dict(os.environ),
                     f"{config_flags.get_config_filename(f['config'])} for {f.topology}"))
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  out = f.json or default_json(config_flags.get_config_filename(f["config"]), f.topology)

  def run():
    report = preflight(f.config, f.topology, f.train_images, f.classes, f.max_batch)
    lines = summary_lines(report)
    print("\n".join(lines))
    fileio.makedirs(os.path.dirname(os.path.abspath(out)))
    fileio.write_text(out, json.dumps(report, indent=1))
    print(f"Wrote {out}.")
    misfit = [k for k in ("train", "features") if not report[k]["fits"]]
    if misfit:
      r, what = report[misfit[0]], "DTL1 train" if misfit[0] == "train" else "DTL2 feature"
      why = (r["reason"] if not r["compiled"] else f"the {what} step does not fit on {f.topology}: "
             f"{_gib(r['hbm_bytes']['total'])} per chip of {_gib(r['hbm_bytes']['capacity'])}")
      raise RuntimeError(f"{why}; lower input.{'batch_size' if misfit[0] == 'train' else 'eval_batch_size'} "
                         "(--max_batch finds the largest train batch that fits)")
  try:
    sys.exit(cli_front.one_line_errors(run))
  except RuntimeError as e:  # Does not compile, or does not fit: one line, exit status 1.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
  flags.DEFINE_string("topology", None, "Cloud TPU topology (v5e:2x4, v4:2x2x1, v6e:16x16) or accelerator type "
                      "(v5litepod-8, v4-8).")
  flags.DEFINE_bool("max_batch", False, "Also find the largest per-chip train batch that fits.")
  flags.DEFINE_string("json", "", "Where to write the report (default runs/preflight/<config>-<topology>.json).")
  flags.DEFINE_integer("train_images", 1000, "Training images, for the learning-rate schedule's length only.")
  flags.DEFINE_integer("classes", 0, "Classes of the head (default: data.classes, else 2).")
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main)
