r"""Repeated stratified k-fold cross-validation of any config: mean and 95% intervals of every metric.

  python -m jfacediag.cv --config configs/dsf/vgg_face_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.cv --config configs/toy.py:method=svm --folds 5 --repeats 2 --workdir runs/cv-toy --parallel 2

Each (repeat r, fold f) is an ordinary run (jfacediag.train) in WORKDIR/folds/r<r>_f<f> with data.split=kfold,
data.fold=f and data.split_seed = config.data.split_seed + r. On a flat class folder the folds partition all images;
on a train/ + test/ folder (jfacediag.data.prepare's paper split) they partition train/, and test/ is a `holdout`
that every fold model also scores.

Model selection never sees the fold's test images: DTL1 holds out --inner_val of the training fold (unless the
config already sets data.val_fraction) and reports the checkpoint that is best on it (the epoch); DTL2 and dsift
choose C by an inner cross-validation on the training fold (svm.select_C). Calibration uses the same held-out
data (jfacediag/calibration.py).

Resumable: a finished fold (its cv_fold_done.json, written after its report, exists) is never rerun, an interrupted
one resumes from its checkpoint (a killed process loses at most the steps since the last checkpoint); rerun the
same command. --parallel N runs the pending folds in N processes (one after the other by
default). A fold's checkpoints are deleted once its report is written (--keep-checkpoints keeps them; VGG-16 is
0.5 GB per fold).

WORKDIR/cv.md, cv.json, folds.csv: per-fold results; for every metric the mean, the fold-to-fold spread (2.5-97.5
percentiles of the fold values) and a 95% interval of the mean by the corrected resampled t-test (Nadeau & Bengio
2003: fold estimates share training images, so the naive standard error is too small); the pooled out-of-fold
accuracy of each repeat; and the fold ensemble: the fold models' calibrated probabilities averaged on the holdout
(train/ + test/ data), or over the repeats for each image's out-of-fold predictions (flat data), with bootstrap
intervals.
"""
import sys

if __name__ == "__main__":  # --help and command-line mistakes answer before JAX and TensorFlow load.
  from jfacediag import cli_front  # pylint: disable=g-import-not-at-top
  cli_front.preflight("cv", __doc__, ("folds", "repeats", "parallel", "inner_val", "max_folds", "keep_checkpoints"))

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess

from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np
from scipy import stats

from jfacediag import cli_front, config_check, dataset, fileio, methods, metrics as metrics_lib, rundir, train
from jfacediag import workdir_lock
from jfacediag.methods import finetune
from jfacediag.progress import log


@dataclasses.dataclass
class Options:
  folds: int = 5  # k of the stratified k-fold.
  repeats: int = 10  # Repetitions with different fold assignments (split_seed + r).
  parallel: int = 1  # Processes running folds at once (1 = one after the other, in this process).
  inner_val: float = 0.2  # DTL1: fraction of the training fold held out (when data.val_fraction = 0).
  max_folds: int = 0  # Run at most this many pending folds, then stop (0 = all).
  keep_checkpoints: bool = False  # Keep each fold's checkpoints after its report is written.


SETTINGS = "cv_settings.json"


def fold_name(r, f):
  return f"r{r:02d}_f{f}"


def fold_config(config, root, r, f, folds, inner_val, cache):
  """The run config of fold f of repeat r."""
  c = config.copy_and_resolve_references()
  c.data.dir, c.data.split, c.data.num_folds, c.data.fold = root, "kfold", folds, f
  c.data.split_seed = config.data.split_seed + r
  c.eval.bootstrap = 0  # Intervals come from the folds; the ensemble gets bootstrap intervals below.
  if c.leakage.check or c.data.group_by:
    c.leakage.cache = c.leakage.cache or cache
  if c.method == finetune.NAME:  # The epoch is chosen on an inner validation split, C by inner CV.
    if c.data.val_fraction == 0:
      c.data.val_fraction = inner_val
    c.train.report_checkpoint = "best"
  else:
    c.svm.select_C = True
  return c


def check_settings(workdir, settings):
  path = os.path.join(workdir, SETTINGS)
  if fileio.exists(path):
    stored = json.loads(fileio.read_text(path))
    diff = [f"  {k}: {stored.get(k)!r} in {path}, {settings.get(k)!r} now" for k in sorted(set(stored) | set(settings))
            if stored.get(k) != settings.get(k)]
    if diff:
      raise ValueError("This CV directory was started with other settings; use a new --workdir or the same "
                       "flags:\n" + "\n".join(diff))
  else:
    fileio.makedirs(workdir)
    with fileio.open(path, "w") as f:
      json.dump(settings, f, indent=2)


DONE = "cv_fold_done.json"  # Written after a fold's run has returned: its report is complete.


def is_done(fold_dir):
  return fileio.exists(os.path.join(fold_dir, DONE))


def run_folds(config, workdir, root, names, opts):
  """Runs the named folds here, one after the other. Returns False when one stopped early (rerun resumes)."""
  for name in names:
    r, f = map(int, re.match(r"r(\d+)_f(\d+)", name).groups())
    fold_dir = rundir.fold_dir(workdir, name)
    log(f"== CV fold {name} (repeat {r}, fold {f}) " + "=" * 50)
    c = fold_config(config, root, r, f, opts.folds, opts.inner_val, os.path.join(workdir, "leakage_cache.json.gz"))
    result = train.run(c, fold_dir)
    if result is None:
      return False
    if not opts.keep_checkpoints and fileio.exists(os.path.join(fold_dir, "checkpoints")):
      shutil.rmtree(os.path.join(fold_dir, "checkpoints"), ignore_errors=True)
    with fileio.open(os.path.join(fold_dir, DONE), "w") as out:
      json.dump({"repeat": r, "fold": f, "accuracy": result["accuracy"]["value"]}, out)
  return True


def run_worker(workdir, names, keep_checkpoints):
  """A --parallel worker process: runs the named folds of the CV in workdir, with the config and settings its
  cv_settings.json holds. Exits 0, or 3 when a fold stopped early."""
  logging.set_verbosity(logging.WARNING)
  settings = json.loads(fileio.read_text(os.path.join(workdir, SETTINGS)))
  config = config_check.from_json(settings["config"])
  opts = Options(folds=settings["folds"], repeats=settings["repeats"], inner_val=settings["inner_val"],
                 keep_checkpoints=keep_checkpoints)
  ok = run_folds(config, workdir, dataset.data_dir_for(config, workdir), names, opts)
  raise SystemExit(0 if ok else 3)


def run_parallel(workdir, pending, opts):
  """Runs the pending folds in opts.parallel worker processes (run_worker), round robin. False if any failed."""
  procs = []
  for k in range(opts.parallel):
    mine = pending[k::opts.parallel]
    if mine:
      log_path = os.path.join(workdir, f"worker{k}.log")
      log(f"worker {k}: folds {', '.join(mine)} (log {log_path})")
      call = f"from jfacediag import cv; cv.run_worker({workdir!r}, {mine!r}, {opts.keep_checkpoints!r})"
      with open(log_path, "a", encoding="utf-8") as log_file:
        procs.append(subprocess.Popen([sys.executable, "-c", call], stdout=log_file, stderr=subprocess.STDOUT))
  codes = [p.wait() for p in procs]
  for k, code in enumerate(codes):
    if code != 0:
      log(f"worker {k} exited with {code}; see {os.path.join(workdir, f'worker{k}.log')}")
  return all(c == 0 for c in codes)


# == Aggregation =======================================================================================================
def summarise(values, n_test, n_train):
  """mean, fold spread (percentiles) and the corrected resampled t interval of the mean (Nadeau & Bengio)."""
  v = np.array([x for x in values if x is not None], np.float64)
  if len(v) == 0:
    return {"mean": None, "std": None, "folds": 0, "spread95": None, "ci95": None}
  out = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "folds": len(v),
         "spread95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))], "ci95": None}
  if len(v) > 1:
    half = stats.t.ppf(0.975, len(v) - 1) * np.sqrt((1 / len(v) + n_test / max(n_train, 1)) * v.var(ddof=1))
    out["ci95"] = [float(max(0.0, v.mean() - half)), float(min(1.0, v.mean() + half))]
  return out


def _ensemble(rows_by_fold, classes, config):
  """Mean calibrated probability per image over the fold models' rows; metrics with bootstrap intervals."""
  probs, labels = {}, {}
  for rows in rows_by_fold:
    for row in rows:
      probs.setdefault(row["file"], []).append([float(row[f"prob_{c}"]) for c in classes])
      labels[row["file"]] = classes.index(row["true"])
  files = sorted(probs)
  p = np.array([np.mean(probs[f], 0) for f in files])
  y = np.array([labels[f] for f in files])
  positive = classes.index(config.eval.positive_class) if config.eval.positive_class else 1
  m = metrics_lib.compute(y, p, classes, "mean calibrated probability", config.eval.bootstrap or 1000, config.seed,
                          positive)
  return {"images": len(files), "models_per_image": float(np.mean([len(probs[f]) for f in files])),
          "metrics": m}


def aggregate(config, workdir, folds, repeats):
  names = [fold_name(r, f) for r in range(repeats) for f in range(folds)]
  done = [n for n in names if is_done(rundir.fold_dir(workdir, n))]
  per_fold, oof, holdout = [], {}, []
  classes = None
  for n in done:
    d = rundir.fold_dir(workdir, n)
    m = rundir.read_metrics(d)
    classes = m["classes"]
    counts = m["run"]["split_counts"]
    per_fold.append({"fold": n, "test": m["num_test"], "train": counts["train"], "val": counts.get("val", 0),
                     **{k: v for k, (v, _) in metrics_lib.headline(m).items()}})
    oof.setdefault(n.split("_")[0], []).append(rundir.read_predictions(d))
    if rundir.read_predictions(d, holdout=True) is not None:
      holdout.append(rundir.read_predictions(d, holdout=True))
  out = {"folds": folds, "repeats": repeats, "finished": len(done), "total": len(names), "per_fold": per_fold,
         "config": config.to_dict(), "classes": classes}
  if not per_fold:
    return out
  n_test = np.mean([p["test"] for p in per_fold])
  n_train = np.mean([p["train"] + p["val"] for p in per_fold])
  keys = [k for k in per_fold[0] if k not in ("fold", "test", "train", "val")]
  out["summary"] = {k: summarise([p.get(k) for p in per_fold], n_test, n_train) for k in keys}
  # Pooled out-of-fold accuracy per complete repeat (every image tested once).
  out["pooled_accuracy_per_repeat"] = {}
  for r, fl in oof.items():
    if len(fl) == folds:
      correct = [row["correct"] == "1" for rows in fl for row in rows]
      out["pooled_accuracy_per_repeat"][r] = {"value": float(np.mean(correct)), "images": len(correct),
                                              "clopper_pearson95": metrics_lib.clopper_pearson(sum(correct),
                                                                                               len(correct))}
  if holdout:
    out["ensemble"] = {"on": "holdout (test/ folder), every finished fold model", **_ensemble(holdout, classes,
                                                                                             config)}
  else:
    out["ensemble"] = {"on": "out-of-fold predictions averaged over repeats",
                       **_ensemble([rows for fl in oof.values() for rows in fl], classes, config)}
  return out


def _pct(x):
  return "n/a" if x is None else f"{100 * x:.1f}"


def write(workdir, result):
  rundir.write_json(workdir, rundir.CV, result)
  if result["per_fold"]:
    with fileio.open(os.path.join(workdir, "folds.csv"), "w") as f:
      w = csv.DictWriter(f, list(result["per_fold"][0]))
      w.writeheader()
      w.writerows(result["per_fold"])
  c = result["config"]
  on = c["model"]["backbone"] if methods.get(c["method"]).NETWORK else "dense SIFT"
  md = [f"# Cross-validation: {c['method']} on {on}", "",
        f"{result['folds']}-fold x {result['repeats']} repeats, stratified; {result['finished']}/{result['total']} "
        "folds finished" + ("" if result["finished"] == result["total"] else " (rerun the command to finish)") + ".",
        ""]
  if "summary" in result:
    md += ["| metric | mean % | 95% CI of the mean (corrected t) | fold spread (2.5-97.5 pct) | std |",
           "|---|---|---|---|---|"]
    for k, s in result["summary"].items():
      ci = f"[{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}]" if s["ci95"] else "n/a"
      spread = f"[{_pct(s['spread95'][0])}, {_pct(s['spread95'][1])}]" if s["spread95"] else "n/a"
      md.append(f"| {k} | {_pct(s['mean'])} | {ci} | {spread} | {_pct(s['std'])} |")
    md += ["", "Pooled out-of-fold accuracy per repeat (every image tested once; exact binomial 95%): " + ", ".join(
        f"{r} {_pct(a['value'])}% [{_pct(a['clopper_pearson95'][0])}, {_pct(a['clopper_pearson95'][1])}]"
        for r, a in result["pooled_accuracy_per_repeat"].items()) + ". The corrected t interval above collapses "
        "when every fold scores the same (all 100%); the exact interval does not.", ""]
    e = result["ensemble"]
    acc = e["metrics"]["accuracy"]
    cp = acc["clopper_pearson95"]
    md += [f"**Fold ensemble** ({e['on']}; {e['images']} images, {e['models_per_image']:.1f} models per image): "
           f"accuracy {_pct(acc['value'])}% [{_pct(acc['ci95'][0])}, {_pct(acc['ci95'][1])}] (bootstrap), "
           f"[{_pct(cp[0])}, {_pct(cp[1])}] (exact binomial), AUC "
           + (f"{e['metrics']['roc_auc']['value']:.3f}" if e["metrics"]["roc_auc"]["value"] is not None else "n/a")
           + ".", "", "## Folds", "", "| fold | train+val | test | accuracy % | F1 % | AUC | ECE before/after |",
           "|---|---|---|---|---|---|---|"]
    for p in result["per_fold"]:
      ece = (f"{p['ece_before']:.3f} / {p['ece_after']:.3f}" if "ece_before" in p else "n/a")
      auc = f"{p['auc']:.3f}" if p["auc"] is not None else "n/a"
      md.append(f"| {p['fold']} | {p['train'] + p['val']} | {p['test']} | {_pct(p['accuracy'])} | {_pct(p['f1'])} | "
                f"{auc} | {ece} |")
  md += ["", "Precision, sensitivity, specificity and F1 are of the positive class for two classes (eval."
         "positive_class, default the second class), macro averages otherwise. Fold reports: folds/*/report/.",
         "This is a research tool, not a medical device."]
  with fileio.open(os.path.join(workdir, "cv.md"), "w") as f:
    f.write("\n".join(md) + "\n")


def default_workdir(config_arg):
  return train.default_workdir(config_arg).replace("runs" + os.sep, "runs" + os.sep + "cv-", 1)


def run(config, workdir, opts):
  """The cross-validation of config in workdir (resumable). Returns (cv.json's content, False when a fold stopped
  early or a worker failed)."""
  config_check.validate(config)
  if config.compare:
    raise ValueError(f"jfacediag.cv runs one method; got compare={tuple(config.compare)} (run one CV per method)")
  if opts.folds < 2 or opts.repeats < 1:
    raise ValueError(f"--folds must be >= 2 and --repeats >= 1; got {opts.folds}, {opts.repeats}")
  names = [fold_name(r, f) for r in range(opts.repeats) for f in range(opts.folds)]
  workdir_lock.acquire(workdir, "CV --workdir")  # Released at exit; --parallel workers lock their fold dirs.
  check_settings(workdir, {"folds": opts.folds, "repeats": opts.repeats, "inner_val": opts.inner_val,
                           "config": json.loads(config.to_json_best_effort())})
  root = dataset.data_dir_for(config, workdir)
  pending = [n for n in names if not is_done(rundir.fold_dir(workdir, n))]
  already = len(names) - len(pending)
  if opts.max_folds:
    pending = pending[:opts.max_folds]
  on = config.model.backbone if methods.get(config.method).NETWORK else "dense SIFT"
  log(f"jfacediag.cv: {opts.folds}-fold x {opts.repeats} repeats of {config.method} on {on}; "
      f"{already} of {len(names)} folds already done; running {len(pending)} "
      + (f"in {opts.parallel} processes" if opts.parallel > 1 else "here, one after the other")
      + f"; workdir {workdir}")
  if opts.parallel > 1 and len(pending) > 1:
    ok = run_parallel(workdir, pending, opts)
  else:
    ok = run_folds(config, workdir, root, pending, opts)
  result = aggregate(config, workdir, opts.folds, opts.repeats)
  write(workdir, result)
  s = result.get("summary", {}).get("accuracy")
  log(f"{result['finished']}/{result['total']} folds finished"
      + (f"; accuracy {_pct(s['mean'])}% (95% CI of the mean {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])})"
         if s and s["ci95"] else "") + f"; {os.path.join(workdir, 'cv.md')}")
  return result, ok


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  opts = Options(folds=f.folds, repeats=f.repeats, parallel=f.parallel, inner_val=f.inner_val,
                 max_folds=f.max_folds, keep_checkpoints=f.keep_checkpoints)
  workdir = fileio.absolute(f.workdir or default_workdir(config_flags.get_config_filename(f["config"])))

  def run_all():
    _, ok = run(f.config, workdir, opts)
    if not ok:  # A fold stopped early or a worker failed: rerunning the command resumes.
      sys.exit(3)

  sys.exit(cli_front.one_line_errors(run_all))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "CV directory (default: runs/cv-<config file name>).")
  flags.DEFINE_integer("folds", Options.folds, "k of the stratified k-fold.")
  flags.DEFINE_integer("repeats", Options.repeats, "Repetitions with different fold assignments (split_seed + r).")
  flags.DEFINE_integer("parallel", Options.parallel, "Processes running folds at once (1 = one after the other, "
                       "in this process).")
  flags.DEFINE_float("inner_val", Options.inner_val, "DTL1: fraction of the training fold held out for choosing "
                     "the epoch and calibrating (when the config has data.val_fraction = 0).")
  flags.DEFINE_integer("max_folds", Options.max_folds, "Run at most this many pending folds, then stop (0 = all); "
                       "rerun to continue.")
  flags.DEFINE_bool("keep_checkpoints", Options.keep_checkpoints, "Keep each fold's checkpoints after its report "
                    "is written.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
