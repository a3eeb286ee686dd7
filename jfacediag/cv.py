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
  cli_front.preflight("cv", __doc__, ("folds", "repeats", "parallel", "inner_val", "max_folds", "keep_checkpoints",
                                      "only"))

import csv
import json
import os
import re
import shutil
import subprocess

from absl import app, flags, logging
import numpy as np
from scipy import stats

from jfacediag import cli_front, fileio, metrics as metrics_lib, rundir, train, workdir_lock

# --config and --workdir are jfacediag.train's flags (one definition per process); --workdir defaults to
# runs/cv-<config name> here.
_CONFIG, _WORKDIR = train._CONFIG, train._WORKDIR  # pylint: disable=protected-access
_FOLDS = flags.DEFINE_integer("folds", 5, "k of the stratified k-fold.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Repetitions with different fold assignments (split_seed + r).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Processes running folds at once (1 = one after the other, "
                                 "in this process).")
_INNER_VAL = flags.DEFINE_float("inner_val", 0.2, "DTL1: fraction of the training fold held out for choosing the "
                                "epoch and calibrating (when the config has data.val_fraction = 0).")
_MAX_FOLDS = flags.DEFINE_integer("max_folds", 0, "Run at most this many pending folds, then stop (0 = all); "
                                  "rerun to continue.")
_KEEP = flags.DEFINE_bool("keep_checkpoints", False, "Keep each fold's checkpoints after its report is written.")
_ONLY = flags.DEFINE_string("only", "", "Internal (--parallel workers): comma-separated fold names to run.")

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
  if c.method == "finetune":
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


def run_folds(config, workdir, root, names, inner_val, keep):
  """Runs the named folds here, one after the other. Returns False when one stopped early (rerun resumes)."""
  for name in names:
    r, f = map(int, re.match(r"r(\d+)_f(\d+)", name).groups())
    fold_dir = rundir.fold_dir(workdir, name)
    train.log(f"== CV fold {name} (repeat {r}, fold {f}) " + "=" * 50)
    c = fold_config(config, root, r, f, _FOLDS.value, inner_val, os.path.join(workdir, "leakage_cache.json.gz"))
    result = train.run(c, fold_dir)
    if result is None:
      return False
    if not keep and fileio.exists(os.path.join(fold_dir, "checkpoints")):
      shutil.rmtree(os.path.join(fold_dir, "checkpoints"), ignore_errors=True)
    with fileio.open(os.path.join(fold_dir, DONE), "w") as out:
      json.dump({"repeat": r, "fold": f, "accuracy": result["accuracy"]["value"]}, out)
  return True


def run_parallel(workdir, pending, n):
  """Runs the pending folds in n worker processes (this command with --only), round robin. False if any failed."""
  argv, skip = [], False
  for a in sys.argv[1:]:  # This command's flags minus the ones the workers get their own values of.
    name = a.split("=")[0].lstrip("-").replace("-", "_")
    if skip or name in ("parallel", "only", "max_folds"):
      skip = not skip and "=" not in a and name in ("parallel", "only", "max_folds")
      continue
    argv.append(a)
  procs = []
  for k in range(n):
    mine = pending[k::n]
    if mine:
      log_path = os.path.join(workdir, f"worker{k}.log")
      train.log(f"worker {k}: folds {', '.join(mine)} (log {log_path})")
      with open(log_path, "a", encoding="utf-8") as log_file:
        procs.append(subprocess.Popen([sys.executable, "-m", "jfacediag.cv", *argv, "--parallel=1",
                                       f"--only={','.join(mine)}"], stdout=log_file, stderr=subprocess.STDOUT))
  codes = [p.wait() for p in procs]
  for k, code in enumerate(codes):
    if code != 0:
      train.log(f"worker {k} exited with {code}; see {os.path.join(workdir, f'worker{k}.log')}")
  return all(c == 0 for c in codes)


# == Aggregation =======================================================================================================
def summarise(values, n_test, n_train):
  """mean, fold spread (percentiles) and the corrected resampled t interval of the mean (Nadeau & Bengio)."""
  v = np.array([x for x in values if x is not None], np.float64)
  if len(v) == 0:
    return {"mean": None, "std": None, "folds": 0, "spread95": None, "ci95": None}
  out = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "folds": int(len(v)),
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
  on = "dense SIFT" if c["method"] == "dsift" else c["model"]["backbone"]
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


def default_workdir():
  return train.default_workdir().replace("runs" + os.sep, "runs" + os.sep + "cv-", 1)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  status = cli_front.one_line_errors(_main, _CONFIG.value, _FOLDS.value, _REPEATS.value,
                                     fileio.absolute(_WORKDIR.value or default_workdir()))
  if status:
    sys.exit(status)


def _main(config, folds, repeats, workdir):
  if "," in config.method:
    raise ValueError(f"jfacediag.cv runs one method; got method={config.method!r} (run one CV per method)")
  if folds < 2 or repeats < 1:
    raise ValueError(f"--folds must be >= 2 and --repeats >= 1; got {folds}, {repeats}")
  names = [fold_name(r, f) for r in range(repeats) for f in range(folds)]
  if _ONLY.value:  # A --parallel worker: run the given folds and exit.
    root = train.data_dir_for(config.data, workdir)
    sys.exit(0 if run_folds(config, workdir, root, _ONLY.value.split(","), _INNER_VAL.value,
                            _KEEP.value) else 3)
  workdir_lock.acquire(workdir, "CV --workdir")  # Released at exit; --parallel workers lock their fold dirs.
  check_settings(workdir, {"folds": folds, "repeats": repeats, "inner_val": _INNER_VAL.value,
                           "config": json.loads(config.to_json_best_effort())})
  root = train.data_dir_for(config.data, workdir)
  pending = [n for n in names if not is_done(rundir.fold_dir(workdir, n))]
  already = len(names) - len(pending)
  if _MAX_FOLDS.value:
    pending = pending[:_MAX_FOLDS.value]
  on = "dense SIFT" if config.method == "dsift" else config.model.backbone
  train.log(f"jfacediag.cv: {folds}-fold x {repeats} repeats of {config.method} on {on}; "
            f"{already} of {len(names)} folds already done; running {len(pending)} "
            + (f"in {_PARALLEL.value} processes" if _PARALLEL.value > 1 else "here, one after the other")
            + f"; workdir {workdir}")
  if _PARALLEL.value > 1 and len(pending) > 1:
    ok = run_parallel(workdir, pending, _PARALLEL.value)
  else:
    ok = run_folds(config, workdir, root, pending, _INNER_VAL.value, _KEEP.value)
  result = aggregate(config, workdir, folds, repeats)
  write(workdir, result)
  s = result.get("summary", {}).get("accuracy")
  train.log(f"{result['finished']}/{result['total']} folds finished"
            + (f"; accuracy {_pct(s['mean'])}% (95% CI of the mean {_pct(s['ci95'][0])}-{_pct(s['ci95'][1])})"
               if s and s["ci95"] else "") + f"; {os.path.join(workdir, 'cv.md')}")
  if not ok:
    sys.exit(3)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
