"""A run's directory: the names of what jfacediag.train and jfacediag.cv write, and typed readers for what
predict, cv, report and `run:RUN` weights read back. Everything goes through jfacediag.fileio, so a run on gs://
reads like a local one.

  WORKDIR/config.json                 the resolved config (train)
  WORKDIR/manifest.csv, split.json    the split (jfacediag.data.splits)
  WORKDIR/checkpoints/                orbax (jfacediag.checkpointing)
  WORKDIR/report/metrics.json         metrics, and under "run" the facts predict needs (report.write)
  WORKDIR/report/predictions.csv      file, true, predicted, correct, score_<class>..., prob_<class>...
  WORKDIR/report/holdout_predictions.csv, report/calibration.json, report/report.md and figures
  WORKDIR/heldout_scores.npz          DTL2's cross-validated train scores (calibration; reused on re-evaluation)
  WORKDIR/<method>/                   one run per method of config.compare (comparison.json)
  WORKDIR/cv.json, folds/<fold>/      a cross-validation (jfacediag.cv): one run per fold
"""
import csv
import io
import json
import os

import numpy as np

from jfacediag import config_check, fileio

CONFIG = "config.json"
REPORT = "report"
METRICS = os.path.join(REPORT, "metrics.json")
PREDICTIONS = os.path.join(REPORT, "predictions.csv")
HOLDOUT_PREDICTIONS = os.path.join(REPORT, "holdout_predictions.csv")
CALIBRATION = os.path.join(REPORT, "calibration.json")
RELIABILITY = os.path.join(REPORT, "reliability.png")
REPORT_MD = os.path.join(REPORT, "report.md")
HELDOUT_SCORES = "heldout_scores.npz"  # DTL2: cross-validated train-split scores, calibration's held-out data.
COMPARISON = "comparison.json"
CV = "cv.json"
FOLDS = "folds"


def path(run_dir, name):
  return os.path.join(run_dir, name)


def is_run(run_dir):
  """A finished run (its report written)."""
  return fileio.exists(path(run_dir, METRICS))


def is_cv(run_dir):
  return fileio.exists(path(run_dir, CV))


def _json(run_dir, name):
  return json.loads(fileio.read_text(path(run_dir, name)))


def read_config(run_dir):
  """The run's config.json as a dict; a comparison's top directory is named as such."""
  if not fileio.exists(path(run_dir, CONFIG)):
    subs = [d for d in config_check.METHODS if fileio.exists(path(path(run_dir, d), CONFIG))]
    hint = f": it holds {', '.join(path(run_dir, d) for d in subs)}; pass one" if subs else ""
    raise FileNotFoundError(f"{run_dir} is not a run's workdir (no {CONFIG}){hint}")
  return _json(run_dir, CONFIG)


def read_metrics(run_dir):
  if not is_run(run_dir):
    raise FileNotFoundError(f"{run_dir} has no {METRICS}: the run has not finished")
  return _json(run_dir, METRICS)


def read_facts(run_dir):
  """metrics.json's "run": data_dir, preprocessing, checkpoint_step, split counts, ensemble members ..."""
  return read_metrics(run_dir)["run"]


def report_time(run_dir):
  """When the report was written (seconds since the epoch): tells a rerun in the same place from the old run."""
  return fileio.mtime(path(run_dir, METRICS))


def read_calibration(run_dir):
  """report/calibration.json as a dict, or None (runs from before calibration)."""
  return _json(run_dir, CALIBRATION) if fileio.exists(path(run_dir, CALIBRATION)) else None


def read_predictions(run_dir, holdout=False):
  """The rows of report/predictions.csv (or holdout_predictions.csv; None when the run has no hold-out), as
  dicts of strings: file, true, predicted, correct ("0"/"1"), score_<class>, prob_<class>."""
  name = HOLDOUT_PREDICTIONS if holdout else PREDICTIONS
  if holdout and not fileio.exists(path(run_dir, name)):
    return None
  return list(csv.DictReader(io.StringIO(fileio.read_text(path(run_dir, name)), newline="")))


def read_cv(run_dir):
  return _json(run_dir, CV)


def fold_dir(cv_dir, fold):
  return path(path(cv_dir, FOLDS), fold)


def write_json(run_dir, name, obj):
  fileio.makedirs(os.path.dirname(path(run_dir, name)) or run_dir)
  with fileio.open(path(run_dir, name), "w") as f:
    json.dump(obj, f, indent=2)


def write_heldout(run_dir, scores, labels):
  """Calibration's held-out data (cross-validated train-split scores of DTL2 and dsift), kept so that a
  re-evaluation of the fitted model finds them."""
  fileio.savez(path(run_dir, HELDOUT_SCORES), scores=scores, labels=labels)


def read_heldout(run_dir):
  """(scores, labels) written by write_heldout, or None."""
  if not fileio.exists(path(run_dir, HELDOUT_SCORES)):
    return None
  with fileio.open(path(run_dir, HELDOUT_SCORES), "rb") as f:
    z = np.load(f)
    return z["scores"], z["labels"]


def finished(where):
  """[(kind, dir)] of the finished runs at `where`: a run ("run"), a CV directory ("cv"), or a folder holding them
  (one level down)."""
  if is_cv(where):
    return [("cv", where)]
  if is_run(where):
    return [("run", where)]
  out = []
  if fileio.isdir(where):
    for sub in sorted(fileio.listdir(where)):
      d = path(where, sub.rstrip("/"))
      if is_cv(d):
        out.append(("cv", d))
      elif is_run(d):
        out.append(("run", d))
  return out
