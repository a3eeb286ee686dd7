r"""Trains and evaluates one run: fine-tuning (DTL1) or frozen features + linear SVM (DTL2).

  python -m jfacediag.train --config configs/demo.py            # --workdir defaults to runs/<config name>
  python -m jfacediag.train --config configs/toy.py --workdir runs/toy
  python -m jfacediag.train --config configs/toy.py:method=svm --workdir runs/toy-svm --config.svm.C=0.1

WORKDIR receives: config.json, manifest.csv + split.json (the split, reused on resume), checkpoints/ (orbax),
history.jsonl, tensorboard/, and report/ (metrics.json, predictions.csv, confusion_matrix.png, curves.png,
roc.png for two classes, report.md); jfacediag/rundir.py names and reads them. Rerunning the same command on a
workdir that holds a checkpoint resumes it.
With config.compare=("svm", "finetune") each method gets WORKDIR/<method>/ and WORKDIR/report.md compares them.
The run reads top to bottom in run(): jfacediag/dataset.py (data and split), jfacediag/methods/ (finetune, svm,
dsift), jfacediag/evaluation.py (calibration, metrics, report).
"""
import sys

if __name__ == "__main__":  # --help and command-line mistakes answer before JAX and TensorFlow load.
  from jfacediag import cli_front  # pylint: disable=g-import-not-at-top
  cli_front.preflight("train", __doc__, ())

import contextlib
import os
import re

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from jfacediag import cli_front, compare as compare_lib, config_check, dataset, dsift as bag_of_words, evaluation
from jfacediag import fileio, methods, rundir, sharding, workdir_lock
from jfacediag.data import images
from jfacediag.progress import log

def run(config, workdir):
  """Runs config's one method in workdir: data, method, evaluation. Returns the metrics dict (report/metrics.json),
  or None when the run stopped before the end (preemption, train.stop_after_steps; rerunning resumes).

  The workdir is locked for the run (jfacediag/workdir_lock.py): a second run on it stops at once, naming the first.
  """
  if config.compare:
    raise ValueError(f"config.compare={tuple(config.compare)} runs several methods: use compare(config, workdir)")
  with _session(config, workdir) as workdir:
    method = methods.get(config.method)
    log(f"jfacediag: {method.NAME} on {config.model.backbone if method.NETWORK else 'dense SIFT (no network)'}; "
        f"{jax.device_count()} device(s) ({jax.devices()[0].platform}), {jax.process_count()} process(es); "
        f"workdir {workdir}")
    if jax.process_index() == 0:
      changed = config_check.check_resume(config, workdir, _trained(workdir))
      if changed:
        log("Resuming with changed settings (config.resume_allow): "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
      fileio.write_text(rundir.path(workdir, rundir.CONFIG), config.to_json_best_effort(indent=2))
    ds = dataset.prepare(config, workdir)
    outcome = method.run(config, workdir, ds)
    if outcome is None:
      return None
    return evaluation.evaluate(config, workdir, ds, outcome, method)


def compare(config, workdir):
  """config.compare: each method an ordinary run into WORKDIR/<method>/, then a comparison (jfacediag/compare.py).
  Returns {method: metrics dict}, or None when one stopped before the end."""
  with _session(config, workdir) as workdir:
    return compare_lib.run(config, workdir, run)


@contextlib.contextmanager
def _session(config, workdir):
  """Validates the config, joins the other processes, creates and locks the workdir; yields its absolute path."""
  config_check.validate(config)
  images.MAX_PIXELS = int(config.data.max_megapixels * 1e6)
  sharding.maybe_initialize_distributed(config.distributed)
  dataset.check_folder(config.data)  # One class folder: refused before the workdir exists.
  workdir = fileio.absolute(workdir)
  if not fileio.is_remote(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file, not a directory")
  fileio.makedirs(workdir)
  with workdir_lock.held(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    yield workdir


def _trained(workdir):
  """The workdir holds a trained state: an orbax checkpoint step or a fitted dsift model."""
  ckpt = os.path.join(workdir, "checkpoints")
  steps_dirs = [d for d in (fileio.listdir(ckpt) if fileio.exists(ckpt) else []) if d.rstrip("/").isdigit()]
  return bool(steps_dirs) or fileio.exists(os.path.join(workdir, bag_of_words.MODEL_FILE))


def default_workdir(config_arg):
  """runs/<config file stem>[-<config argument>], for a command line without --workdir."""
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", name + ("-" + re.sub(r"[^\w.-]+", "_", arg) if arg else ""))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO.
  f = flags.FLAGS
  workdir = f.workdir or default_workdir(config_flags.get_config_filename(f["config"]))
  if not f.workdir:
    log(f"--workdir not given: using {workdir}")
  sys.exit(cli_front.one_line_errors(compare if f.config.compare else run, f.config, workdir))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for the split, checkpoints, logs and report "
                      "(default: runs/<config file name>).")
  flags.mark_flags_as_required(["config"])
  app.run(main)
