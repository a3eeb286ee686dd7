r"""Benchmark: jfacediag's train step, DTL2 features and input pipeline, against PyTorch on the same model and device.

  python -m jfacediag.bench --model resnet50 --size 224 --batch 8
  python -m jfacediag.bench --model iresnet50 --size 112 --batch 64 --json bench.json
  python -m jfacediag.bench --smoke --json smoke.json          # resnet18 at 32 px, batch 2, 2 steps (CI)

jfacediag side: the trainer's own jitted steps (steps.make_train_step / make_feature_step: SGD momentum, weight
decay, BatchNorm updated, buffers donated) on random data already on the devices, then the tf.data input
pipeline alone on generated JPEG files (decode, resize, crop, augment). FLOPs per image come from XLA's cost
analysis of the steps traced with the plain layers (a multiply-add counts 2; the CPU forms of models/layers.py do
other arithmetic for the same function), and achieved FLOP/s from the step time; XLA's temporary memory per step
(`compiled.memory_analysis()`) is printed beside them.

PyTorch side, in the same process on the same device: the repo's reference module of the same architecture
(jfacediag/reference/torch_models.py) with a new linear head, SGD momentum with weight decay, cross-entropy,
eager and `torch.compile` (where it works; --no-torch-compile skips it). The sides take turns, a few steps each
(bench._race), and each side's median step time is reported. Ratios are PyTorch time / jfacediag time: above 1
means jfacediag is faster. Beside each ratio, "(turns a-b)" is the range of the same ratio taken round by round
(bench.turn_ratios): how far the load on a shared machine moved it. The JSON keeps every timed step. Each side's
CPU use per timed step is printed too: user and system seconds (all threads) and page faults, so that time spent
in the kernel (zero-filling fresh memory) shows apart from the computation. On CPU both use every core; on GPU
the device name and peak memory are reported. Prints a table and one JSON line (and writes it to --json).
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jfacediag import base_config, cli_front, cpu, models, optim, sharding, steps
from jfacediag.models import classifier, layers


TURN = 3  # Steps per side and turn in _race, the first of them untimed.


def _race(runners, warmup, steps, block=TURN):
  """Median seconds per step of each runner ({side: {"train": fn, "features": fn}}, fn runs one step to the end).

  After `warmup` untimed calls each, the sides take turns in blocks of `block` steps whose first step is not timed,
  until each side has `steps` timed steps. Turns keep every side on the same machine minute by minute (a shared
  CPU's speed drifts 10-20% within minutes, which timing one side after the other turned into ratios off by as
  much); the untimed first step of a turn absorbs the cost of switching sides, which no user pays (SFace's train
  step right after PyTorch's: 734 ms, the next four 426-444 ms; README Benchmark). The process's page faults, user
  and system CPU seconds (all threads) are counted around each side's timed calls.

  Returns (medians {side: {what: s}}, CPU per timed step {side: {what: {"page_faults", "user_s", "system_s"}}},
  turns {side: {what: [[s, ...], ...]}}: each turn's timed steps, in order, so that turn k of every side ran in the
  same round)."""
  turns = {side: {what: [] for what in fns} for side, fns in runners.items()}
  used = {side: {what: np.zeros(3) for what in fns} for side, fns in runners.items()}
  for what in ("features", "train"):
    print(f"timing {what}: {steps} steps each for {', '.join(runners)}, in turns", file=sys.stderr, flush=True)
    for fns in runners.values():
      for _ in range(warmup):
        fns[what]()
    done = 0
    while done < steps:
      for side, fns in runners.items():
        fns[what]()
        turns[side][what].append([])
        for _ in range(min(block - 1, steps - done)):
          u0, t = _cpu_used(), time.perf_counter()
          fns[what]()
          turns[side][what][-1].append(time.perf_counter() - t)
          used[side][what] += _cpu_used() - u0
      done += len(turns[side][what][-1])
  return ({side: {what: float(np.median(_steps(t))) for what, t in ts.items()} for side, ts in turns.items()},
          {side: {what: dict(zip(("page_faults", "user_s", "system_s"), (u / steps).tolist()))
                  for what, u in us.items()} for side, us in used.items()}, turns)


def _cpu_used():
  """This process's page faults, user and system CPU seconds so far (every thread)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return np.array([r.ru_minflt, r.ru_utime, r.ru_stime], np.float64)


def _steps(turns):
  """Every timed step of a side, in order, from its turns."""
  return [t for turn in turns for t in turn]


def turn_ratios(theirs, ours):
  """Ratio (their time / ours) of each round's turns (lists of step seconds from _race): the same ratio measured
  on the machine as it was minute by minute, so their spread shows how far the load moved the median ratio."""
  return [float(np.median(a) / np.median(b)) for a, b in zip(theirs, ours)]


# Dense peak TFLOP/s per device from the vendors' data sheets (no sparsity), by device_kind substring, first match
# wins: MFU = achieved FLOP/s / (devices x peak of the run's dtype). TPUs list bfloat16 only (their float32 matmuls
# are bf16 passes), so a float32 run there is measured against the bf16 peak, and the JSON says so (mfu_peak).
PEAK_TFLOPS = (
    ("TPU v6", {"bfloat16": 918.0}), ("TPU v5p", {"bfloat16": 459.0}), ("TPU v5", {"bfloat16": 197.0}),
    ("TPU v4", {"bfloat16": 275.0}), ("H100 PCIe", {"bfloat16": 756.0, "float32": 51.0}),
    ("H200", {"bfloat16": 989.0, "float32": 67.0}), ("H100", {"bfloat16": 989.0, "float32": 67.0}),
    ("A100", {"bfloat16": 312.0, "float32": 19.5}), ("L40S", {"bfloat16": 362.0, "float32": 91.6}),
    ("L40", {"bfloat16": 181.0, "float32": 90.5}), ("L4", {"bfloat16": 121.0, "float32": 30.3}),
)


def peak_tflops(device_kind, dtype):
  """(peak TFLOP/s per device, which peak) for a known device, else (None, reason)."""
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      if dtype in peaks:
        return peaks[dtype], f"{key} {dtype} dense peak {peaks[dtype]:g} TFLOP/s"
      return peaks["bfloat16"], f"{key} bfloat16 dense peak {peaks['bfloat16']:g} TFLOP/s (no {dtype} peak listed)"
  return None, f"no peak known for {device_kind!r} (bench.PEAK_TFLOPS)"


def _spread(ratios):
  return f" (turns {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""


def _cpu(u):
  return f"user {u['user_s']:.2f} s + system {u['system_s']:.2f} s, {u['page_faults']:.0f} page faults"


def _temps(j):
  if j["train_temp_mib"] is None or j["features_temp_mib"] is None:
    return ""
  return f"; XLA temporaries {j['train_temp_mib']:.0f} MiB (train), {j['features_temp_mib']:.0f} MiB (features)"


def _pct(x):
  return "n/a" if x is None else f"{100 * x:.1f}%"


def _model_flops(make_step, *args):
  """XLA's FLOP count of a new step traced with the plain layers (layers.as_convolutions): the model's own
  arithmetic, for MFU. The CPU forms compute the same function with other arithmetic (Winograd's transforms)."""
  with layers.as_convolutions():
    cost = make_step().lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _temp_mib(compiled):
  """XLA's temporary buffers for one run of a compiled step, MiB (on CPU allocated afresh at every step), or None."""
  analysis = compiled.memory_analysis()
  return analysis.temp_size_in_bytes / 2**20 if analysis is not None else None


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.bench", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="resnet50", help=f"backbone: {', '.join(models.names())}")
  ap.add_argument("--size", type=int, default=112)
  ap.add_argument("--batch", type=int, default=8, help="global batch")
  ap.add_argument("--classes", type=int, default=5)
  ap.add_argument("--steps", type=int, default=10, help="timed steps per side (the median is reported)")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  ap.add_argument("--dtype", default="float32", choices=sorted(steps.DTYPES), help="jfacediag compute dtype")
  ap.add_argument("--input-images", type=int, default=64, help="generated JPEGs for the input pipeline (0 = skip)")
  ap.add_argument("--input-paths", action="store_true", help="only the input pipeline: an aligned folder of PNG "
                  "crops against the same crops as records (python -m jfacediag.build), with and without augmentation")
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
  ap.add_argument("--no-torch-compile", action="store_true", help="PyTorch eager only")
  ap.add_argument("--smoke", action="store_true", help="resnet18, 32 px, batch 2, 2 steps, no torch.compile")
  ap.add_argument("--json", default="", help="also write the JSON result to this file")
  args = ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))
  if args.steps < 1 or args.warmup < 0:
    ap.error(f"--steps must be at least 1 and --warmup at least 0 (got {args.steps} and {args.warmup})")
  if args.smoke:
    args.model, args.size, args.batch, args.steps, args.warmup = "resnet18", 32, 2, 2, 1
    args.input_images, args.no_torch_compile = 8, True
  return args


# == jfacediag =========================================================================================================
def bench_jax(args, flops=True):
  """Compiles the trainer's steps: (facts, {"train": fn, "features": fn}), each fn one step run to the end; with
  flops, the facts hold the model's FLOPs per image too (two more traces, with the plain layers)."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch, mesh, "--batch")
  dtype = steps.compute_dtype(args.dtype)
  model = classifier.Classifier(models.get(args.model).make(), args.classes)
  variables = jax.device_put(steps.init_variables(model, 0, args.size), sharding.replicated(mesh))
  n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({"image": rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32),
                                 "label": rng.integers(0, args.classes, args.batch).astype(np.int32),
                                 "index": np.arange(args.batch)}, mesh)

  # Features first: the train step donates the state's buffers, which share memory with `variables`.
  extract = steps.make_feature_step(model, mesh, dtype)
  t = time.perf_counter()
  feat_compiled = extract.lower(variables, batch["image"], batch["index"]).compile()
  feat_compile = time.perf_counter() - t

  cfg = base_config.get_config().optim
  lr = optax.constant_schedule(cfg.lr)
  tx = optim.make(cfg, variables["params"], lr)
  state = jax.device_put(steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
      opt_state=tx.init(variables["params"]), rng=jax.random.key_data(jax.random.PRNGKey(0))),
      sharding.replicated(mesh))
  train_step = steps.make_train_step(model, tx, mesh, args.classes, 0.0, True, lr, dtype)
  t = time.perf_counter()
  compiled = train_step.lower(state, {"image": batch["image"], "label": batch["label"]}).compile()
  train_compile = time.perf_counter() - t
  holder = {"state": state}

  def train():
    holder["state"], m = compiled(holder["state"], {"image": batch["image"], "label": batch["label"]})
    jax.block_until_ready(m["loss"])

  dev = jax.devices()[0]
  out = {"params": int(n_params), "devices": jax.device_count(), "platform": dev.platform,
         "cpu_memory": cpu.describe(), "device_kind": dev.device_kind, "dtype": args.dtype,
         "train_compile_s": train_compile, "features_compile_s": feat_compile,
         "train_temp_mib": _temp_mib(compiled), "features_temp_mib": _temp_mib(feat_compiled)}
  if flops:
    out["forward_gflops_per_img"] = _model_flops(lambda: steps.make_feature_step(model, mesh, dtype), variables,
                                                 batch["image"], batch["index"]) / args.batch / 1e9
    out["train_gflops_per_img"] = _model_flops(
        lambda: steps.make_train_step(model, tx, mesh, args.classes, 0.0, True, lr, dtype), holder["state"],
        {"image": batch["image"], "label": batch["label"]}) / args.batch / 1e9
  return out, {"train": train,
               "features": lambda: jax.block_until_ready(feat_compiled(variables, batch["image"], batch["index"]))}


def jax_rates(out, args, step_s, cpu_used):
  """Fills jfacediag's times, img/s, CPU use, achieved FLOP/s, MFU and peak memory from the race's figures."""
  dev = jax.devices()[0]
  for what in ("train", "features"):
    out[f"{what}_step_s"] = step_s[what]
    out[f"{what}_img_per_s"] = args.batch / step_s[what]
    out[f"{what}_cpu_per_step"] = cpu_used[what]
  # Many on CPU: memory handed back each step (cpu.py).
  out["train_page_faults_per_step"] = cpu_used["train"]["page_faults"]
  out["train_achieved_gflops_per_s"] = out["train_gflops_per_img"] * out["train_img_per_s"]
  out["features_achieved_gflops_per_s"] = out["forward_gflops_per_img"] * out["features_img_per_s"]
  peak, out["mfu_peak"] = peak_tflops(dev.device_kind, args.dtype)
  for what in ("train", "features"):
    out[f"{what}_mfu"] = (out[f"{what}_achieved_gflops_per_s"] / (peak * 1e3 * jax.device_count()) if peak
                          else None)
  stats = dev.memory_stats() if dev.platform != "cpu" else None
  if stats:
    out["peak_memory_gib"] = stats.get("peak_bytes_in_use", 0) / 2**30


def bench_input(args):
  """img/s of pipeline.train_batches (PIL decode in tf.data, resize, crop, augment) on generated 250x250 JPEGs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jfacediag.data import pipeline  # pylint: disable=g-import-not-at-top
  spec = models.get(args.model)
  pp = spec.preprocessing.at_size(args.size)
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    files = []
    for i in range(args.input_images):
      files.append(f"{i}.jpg")
      Image.fromarray(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)).save(os.path.join(root, files[-1]),
                                                                                 quality=90)
    labels = np.arange(len(files)) % args.classes
    icfg = ml_collections.ConfigDict(base_config.get_config().input.to_dict())
    n_batches = max(2, 2 * len(files) // args.batch)
    it = pipeline.train_batches(root, files, labels, pp, icfg, args.batch, 0, 0, n_batches + 1)
    next(it)  # Start-up (threads, first decode) is not timed.
    t = time.perf_counter()
    for _ in range(n_batches):
      next(it)
    return {"input_img_per_s": n_batches * args.batch / (time.perf_counter() - t), "input_images": len(files)}


def bench_input_paths(args):
  """img/s and img/s per core of pipeline.train_batches on an aligned folder of real face crops (scikit-image's LFW
  subset aligned arcface112, repeated to --input-images files, resized to --size) and on the same crops as records,
  each with the config's augmentation and without: {path: {"aug"|"plain": img/s}}."""
  import cv2  # pylint: disable=g-import-not-at-top
  from jfacediag.align import folder as aligner  # pylint: disable=g-import-not-at-top
  from jfacediag import build  # pylint: disable=g-import-not-at-top
  from jfacediag.data import lfw_subset, pipeline  # pylint: disable=g-import-not-at-top
  from jfacediag.models.preprocessing import Preprocessing  # pylint: disable=g-import-not-at-top
  pp = Preprocessing(args.size, args.size, "RGB", (127.5,) * 3, (128.0,) * 3).for_crops()
  cores = len(os.sched_getaffinity(0))
  out = {"cores": cores, "size": args.size, "images": args.input_images, "batch": args.batch}
  with tempfile.TemporaryDirectory() as tmp:
    photos, crops, root = (os.path.join(tmp, d) for d in ("photos", "crops", "aligned"))
    lfw_subset.write_photos(photos)
    aligner.align(photos, crops, aligner.Options(style="arcface112", fallback="center"))
    made = sorted(os.path.join(crops, c, f) for c in lfw_subset.CLASSES for f in os.listdir(os.path.join(crops, c)))
    files = []
    for i in range(args.input_images):
      img = cv2.imread(made[i % len(made)])
      if args.size != img.shape[0]:
        img = cv2.resize(img, (args.size, args.size), interpolation=cv2.INTER_CUBIC)
      files.append(f"c{i % 2}/{i:06d}.png")
      os.makedirs(os.path.join(root, f"c{i % 2}"), exist_ok=True)
      cv2.imwrite(os.path.join(root, files[-1]), img)
    with open(os.path.join(crops, "align.json"), encoding="utf-8") as f:
      info = json.load(f)
    info["settings"]["size"] = args.size
    with open(os.path.join(root, "align.json"), "w", encoding="utf-8") as f:
      json.dump(info, f)
    out["png_kib_per_image"] = sum(os.path.getsize(os.path.join(root, f)) for f in files) / len(files) / 1024
    paths = {"folder": root}
    for encoding in ("png", "raw"):
      paths[f"records_{encoding}"] = os.path.join(tmp, f"records_{encoding}")
      index = build.build(root, paths[f"records_{encoding}"], shard_size=1024, leakage_check=False,
                          encoding=encoding)
      out[f"records_{encoding}_kib_per_image"] = index["num_bytes"] / len(files) / 1024
    labels = np.array([int(f[1]) for f in files], np.int32)
    for path, where in paths.items():
      for aug in (True, False):
        icfg = ml_collections.ConfigDict(base_config.get_config().input.to_dict())
        if not aug:
          icfg.flip, icfg.random_resized_crop, icfg.color_jitter = False, False, 0.0
        n_batches = max(2, 2 * len(files) // args.batch)
        it = pipeline.train_batches(where, files, labels, pp, icfg, args.batch, 0, 0, n_batches + 1)
        next(it)  # Start-up (threads, the first shard) is not timed.
        t = time.perf_counter()
        for _ in range(n_batches):
          next(it)
        rate = n_batches * args.batch / (time.perf_counter() - t)
        out.setdefault(path, {})["aug" if aug else "plain"] = rate
  return out


def main_input_paths(args):
  r = bench_input_paths(args)
  print(f"Input pipeline, {r['images']} real face crops (LFW subset, arcface112) at {r['size']} px, batch "
        f"{r['batch']}, {r['cores']} cores; img/s per host / per core:")
  sizes = {"folder": r["png_kib_per_image"], "records_png": r["records_png_kib_per_image"],
           "records_raw": r["records_raw_kib_per_image"]}
  for path in ("folder", "records_png", "records_raw"):
    print(f"  {path:12s} {sizes[path]:6.1f} KiB/image   augmented {r[path]['aug']:7.0f} / "
          f"{r[path]['aug'] / r['cores']:5.0f}   plain {r[path]['plain']:7.0f} / {r[path]['plain'] / r['cores']:5.0f}"
          + ("" if path == "folder" else f"   ({r[path]['aug'] / r['folder']['aug']:.2f}x, "
                                         f"{r[path]['plain'] / r['folder']['plain']:.2f}x the folder)"))
  return _emit(r, args.json)


def _emit(result, path):
  """Prints the result as one JSON line, and writes it to `path` (--json) when given."""
  line = json.dumps(result)
  print(line)
  if path:
    with open(path, "w", encoding="utf-8") as f:
      f.write(line + "\n")
  return result


# == PyTorch ===========================================================================================================
def bench_torch(args, compile_model):
  """The reference module + a new head, eager or torch.compile'd: (first-call times, {"train": fn, "features": fn})."""
  import torch  # pylint: disable=g-import-not-at-top
  arch = models.get(args.model)
  if arch.torch_ref is None or arch.kind == "mtcnn":
    raise LookupError(f"no PyTorch reference for {args.model}")
  device = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  backbone = arch.torch_ref(None).to(device)
  head = torch.nn.Linear(arch.feature_dim, args.classes).to(device)
  params = list(backbone.parameters()) + list(head.parameters())
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(args.batch, 3, args.size, args.size, device=device)
  y = torch.randint(0, args.classes, (args.batch,), device=device)

  net = torch.compile(backbone) if compile_model else backbone

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train():
    backbone.train()
    loss = torch.nn.functional.cross_entropy(head(net(x)[0]), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()

  def features():
    backbone.eval()
    with torch.no_grad():
      net(x)
    sync()

  out = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"}
  for what, fn in (("train", train), ("features", features)):
    t = time.perf_counter()
    fn()  # First call: compilation under torch.compile.
    out[f"{what}_first_step_s"] = time.perf_counter() - t
  if device == "cuda":
    out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30  # Every later step has the same shapes.
  return out, {"train": train, "features": features}


# == main ==============================================================================================================
def main(argv=None):
  args = parse(argv)
  if args.input_paths:
    return main_input_paths(args)
  result = {"model": args.model, "size": args.size, "batch": args.batch, "steps": args.steps,
            "timing": f"median of {args.steps} steps per side, taking turns in blocks of 1 untimed + {TURN - 1} "
                      f"timed steps, after {args.warmup} untimed"}
  result["jfacediag"], runners = bench_jax(args)
  runners = {"jfacediag": runners}
  result["torch"] = {}
  if not args.no_torch:
    for mode in ("eager",) + (() if args.no_torch_compile else ("compile",)):
      try:
        result["torch"][mode], runners[mode] = bench_torch(args, mode == "compile")
      except Exception as e:  # pylint: disable=broad-except
        result["torch"][mode] = {"unavailable": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
  step_s, cpu_used, turns = _race(runners, args.warmup, args.steps)
  jax_rates(result["jfacediag"], args, step_s["jfacediag"], cpu_used["jfacediag"])
  for what in ("train", "features"):
    result["jfacediag"][f"{what}_step_times_s"] = _steps(turns["jfacediag"][what])
  if args.input_images:
    result["jfacediag"].update(bench_input(args))
  j = result["jfacediag"]
  for mode, t in result["torch"].items():
    if mode in step_s:
      for what in ("train", "features"):
        t[f"{what}_step_s"] = step_s[mode][what]
        t[f"{what}_img_per_s"] = args.batch / step_s[mode][what]
        t[f"{what}_step_times_s"] = _steps(turns[mode][what])
        t[f"{what}_cpu_per_step"] = cpu_used[mode][what]
        t[f"{what}_ratio"] = t[f"{what}_step_s"] / j[f"{what}_step_s"]
        t[f"{what}_turn_ratios"] = turn_ratios(turns[mode][what], turns["jfacediag"][what])

  print(f"{args.model} {args.size}x{args.size}, global batch {args.batch}, {j['params'] / 1e6:.2f}M params, "
        f"{j['devices']} x {j['device_kind']}, {j['dtype']}; {j['forward_gflops_per_img']:.2f} GFLOPs/img forward, "
        f"{j['train_gflops_per_img']:.2f} train")
  print(f"  {'':22s} {'train step':>12s} {'img/s':>9s} {'features':>11s} {'img/s':>9s}  notes")
  print(f"  {'jfacediag (jax.jit)':22s} {j['train_step_s'] * 1e3:9.1f} ms {j['train_img_per_s']:9.1f} "
        f"{j['features_step_s'] * 1e3:8.1f} ms {j['features_img_per_s']:9.1f}  compile {j['train_compile_s']:.1f} s"
        f" + {j['features_compile_s']:.1f} s; {j['train_achieved_gflops_per_s']:.1f} GFLOP/s training; "
        f"memory: {j['cpu_memory']}{_temps(j)}")
  print(f"  MFU: train {_pct(j['train_mfu'])}, features {_pct(j['features_mfu'])} ({j['mfu_peak']})")
  for mode, t in result["torch"].items():
    name = f"PyTorch {mode}"
    if "unavailable" in t:
      print(f"  {name:22s} unavailable: {t['unavailable']}")
      continue
    print(f"  {name:22s} {t['train_step_s'] * 1e3:9.1f} ms {t['train_img_per_s']:9.1f} "
          f"{t['features_step_s'] * 1e3:8.1f} ms {t['features_img_per_s']:9.1f}  ratio (PyTorch time / jfacediag "
          f"time) train {t['train_ratio']:.2f}{_spread(t['train_turn_ratios'])}, features "
          f"{t['features_ratio']:.2f}{_spread(t['features_turn_ratios'])}; first step {t['train_first_step_s']:.1f} s")
  for name, side in [("jfacediag", j)] + [(f"PyTorch {m}", t) for m, t in result["torch"].items() if m in step_s]:
    print(f"  CPU per step, {name + ':':18s} " + "; ".join(
        f"{what} {_cpu(side[f'{what}_cpu_per_step'])}" for what in ("train", "features")))
  if "input_img_per_s" in j:
    print(f"  input pipeline (tf.data, {j['input_images']} generated 250x250 JPEGs): {j['input_img_per_s']:.1f} img/s")
  if "peak_memory_gib" in j:
    print(f"  peak device memory: jfacediag {j['peak_memory_gib']:.2f} GiB")
  return _emit(result, args.json)


if __name__ == "__main__":
  main()
