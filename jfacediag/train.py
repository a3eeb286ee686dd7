r"""Trains and evaluates one run: fine-tuning (DTL1) or frozen features + linear SVM (DTL2).

  python -m jfacediag.train --config configs/demo.py            # --workdir defaults to runs/<config name>
  python -m jfacediag.train --config configs/toy.py --workdir runs/toy
  python -m jfacediag.train --config configs/toy.py:method=svm --workdir runs/toy-svm --config.svm.C=0.1

WORKDIR receives: config.json, manifest.csv + split.json (the split, reused on resume), checkpoints/ (orbax),
history.jsonl, tensorboard/, and report/ (metrics.json, predictions.csv, confusion_matrix.png, curves.png,
roc.png for two classes, report.md); jfacediag/rundir.py names and reads them. Rerunning the same command on a
workdir that holds a checkpoint resumes it.
With config.method="svm,finetune" each method gets WORKDIR/<method>/ and WORKDIR/report.md compares them.
"""
import sys

if __name__ == "__main__":  # --help and command-line mistakes answer before JAX and TensorFlow load.
  from jfacediag import cli_front  # pylint: disable=g-import-not-at-top
  cli_front.preflight("train", __doc__, ())

import contextlib
import json
import math
import os
import re
import signal
import time

from absl import app, flags, logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from jfacediag import builtin, calibration, checkpointing, cli_front, config_check, confounds, dsift, fileio, leakage
from jfacediag import metric_writer, metrics as metrics_lib, models, optim, progress, report, rundir, sharding, steps
from jfacediag import svm, workdir_lock
from jfacediag.align import folder as aligner
from jfacediag.data import aligned_folder, images, lfw_subset, pipeline, splits, toy
from jfacediag.models import classifier, ensemble, weights

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the split, checkpoints, logs and report "
                               "(default: runs/<config file name>).")


_LEAK_SHOWN = set()  # (data dir, split) whose leakage summary this process printed in full.


def log(*args):
  if jax.process_index() == 0:
    print(*args, flush=True)


# == Data ==============================================================================================================
def data_dir_for(cfg, workdir):
  """config.data.dir, or a generated folder under WORKDIR/data for data.generate='toy' or 'lfw_subset'."""
  if cfg.dir:
    return os.path.abspath(os.path.expanduser(cfg.dir))
  if cfg.generate not in ("", "toy", "lfw_subset"):
    raise ValueError(f"data.generate={cfg.generate!r}; expected '', 'toy' or 'lfw_subset'")
  if fileio.is_remote(workdir):
    raise ValueError(f"data.generate={cfg.generate!r} writes images into the workdir, which must then be local; "
                     f"got {workdir}. Generate locally and pass --config.data.dir")
  if cfg.generate == "toy":
    root = os.path.join(workdir, "data")
    toy.make_folder(root, num_classes=3, per_class=cfg.train_per_class + cfg.test_per_class)
    return root
  if cfg.generate == "lfw_subset":  # The photos in data/photos, aligned (resumable) into data/aligned.
    photos, aligned = os.path.join(workdir, "data", "photos"), os.path.join(workdir, "data", "aligned")
    lfw_subset.write_photos(photos)
    if not aligned_folder.settings(aligned):
      aligner.align(photos, aligned, aligner.Options(style="arcface112", fallback="center"))
    return aligned
  raise ValueError("config.data.dir is empty: pass --config.data.dir=/path/to/class/folders "
                   "(or data.generate='toy' / 'lfw_subset' for a generated folder)")


def load_split(config, root, workdir):
  """Reuses WORKDIR/manifest.csv when present (after checking its settings), else scans and splits.

  Returns (rows, classes, leak): leak is the leakage guard's result (WORKDIR/leakage.json), None when off.
  """
  cfg = config.data
  rows, stored, classes = splits.read(workdir)
  wanted = splits.settings_for(cfg, splits.layout_of(root))
  leak_path = os.path.join(workdir, leakage.LEAKAGE_FILE)
  if rows is not None:
    splits.check_same_settings(stored, wanted)
    if cfg.classes and cfg.classes.split(",") != classes:
      raise ValueError(f"data.classes={cfg.classes!r} differs from the manifest's class order {classes}")
    leak = leakage.upgrade(json.loads(fileio.read_text(leak_path))) if fileio.exists(leak_path) else None
    return rows, classes, leak
  layout, classes, rows = splits.scan(root, cfg.classes.split(",") if cfg.classes else None,
                                      show_progress=jax.process_index() == 0)
  if cfg.group_by and cfg.group_by not in leakage.GROUP_KINDS:
    raise ValueError(f"data.group_by={cfg.group_by!r}; expected '', {', '.join(map(repr, leakage.GROUP_KINDS))}")
  if cfg.group_by == "identity" and not config.leakage.embedder:
    raise ValueError("data.group_by='identity' needs leakage.embedder (face-recognition weights, e.g. builtin:sface)")
  rows += alignment_drops(root, classes)
  found = None
  if config.leakage.check or cfg.group_by:
    usable = [r.file for r in rows if r.split != "skipped"]
    lcfg = config.leakage.copy_and_resolve_references()
    if cfg.group_by == "duplicates" and not config.leakage.check:
      lcfg.embedder = ""
    found = leakage.find_pairs_cached(root, usable, lcfg, config.leakage.cache, jax.process_index() == 0)
  group_of = leakage.groups([r.file for r in rows if r.split != "skipped"], found,
                            leakage.GROUP_KINDS[cfg.group_by]) if cfg.group_by else None
  settings = splits.assign(rows, classes, layout, cfg, group_of)
  split_of = {r.file: r.split for r in rows}
  leak = leakage.summarise(found, split_of, cfg.group_by, config.leakage.top_pairs) if found is not None else None
  if jax.process_index() == 0:
    splits.write(workdir, rows, settings, classes)
    if leak is not None:
      leakage.write(workdir, found, leak, root, split_of)
  return rows, classes, leak


def check_classes(rows, classes, root, config):
  """Refuses data that cannot give a meaningful result: one class, or a class with no training or test image, or a
  fine-tuning batch larger than the training split."""
  if len(classes) < 2:
    raise ValueError(f"{root} has one class ({classes[0]!r}): a classifier needs at least two class folders")
  missing = [f"{c!r} ({s})" for c in classes for s in ("train", "test")
             if not any(r.class_name == c and r.split == s for r in rows)]
  if missing:
    raise ValueError(f"no image of class {', '.join(missing)} in that split; each class needs at least one "
                     f"training and one test image (data.split={config.data.split!r}, {root})")
  n_train = sum(r.split == "train" for r in rows)
  if config.method == "finetune" and config.input.batch_size > n_train:
    raise ValueError(f"input.batch_size={config.input.batch_size} is larger than the {n_train} training images; "
                     f"use at most {n_train}")


def alignment_drops(root, classes):
  """Photos that jfacediag.align left out of `root` (no face, unreadable), as skipped manifest rows, so that the
  run's manifest and report count them; rows for a class not among `classes` are listed under their folder."""
  if not aligned_folder.settings(root):
    return []
  # --fallback center wrote a crop for a faceless photo: it is in the data (and the leakage guard skips it).
  fallback = {r["source"] for r in aligned_folder.read_rows(root, aligned_folder.MANIFEST) if r.get("fallback")}
  out = []
  for name in (aligned_folder.NO_FACE, aligned_folder.ERRORS):
    for r in aligned_folder.read_rows(root, name):
      if r["source"] in fallback:
        continue
      parts = r["source"].split("/")
      cls = next((p for p in parts[:-1] if p in classes), parts[0] if len(parts) > 1 else "")
      reason = (f"alignment: unreadable ({r.get('reason', '')})" if name == aligned_folder.ERRORS else
                "alignment: no face found (no_face.csv)")
      out.append(splits.Row(f"[not aligned] {r['source']}", cls, "skipped", reason))
  return out


def warn_alignment(root, spec):
  """Warns when the data were aligned (jfacediag.align) in another style than the backbone was trained on."""
  aligned = aligned_folder.settings(root)
  if not aligned or not spec.align_style:
    return
  style = aligned["style"]
  if style != spec.align_style:
    log(f"WARNING: {root} was aligned with style {style!r}, but {spec.name} was trained on {spec.align_style!r} "
        f"crops; face-recognition features transfer best from their own alignment "
        f"(python -m jfacediag.align --style {spec.align_style}).")


# == Evaluation helpers ================================================================================================
def softmax_loss(logits, labels):
  logp = jax.nn.log_softmax(jnp.asarray(logits), -1)
  return float(-np.mean(np.take_along_axis(np.asarray(logp), labels[:, None], 1)))


# == Methods ===========================================================================================================
def finetune(config, workdir, model, variables, data, pp, mesh):
  """DTL1. Returns (variables to report, checkpoint step, which checkpoint) or None when stopped early."""
  root, (tr_files, tr_labels), (va_files, va_labels) = data["root"], data["train"], data["val"]
  num_classes, cfg = model.num_classes, config.train
  batch = config.input.batch_size
  sharding.check_batch_size(batch, mesh)
  steps_per_epoch = len(tr_files) / batch
  total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
  lr = optim.schedule(config.optim, steps_per_epoch, total)
  tx = optim.make(config.optim, variables["params"], lr)
  rep = sharding.replicated(mesh)
  state = jax.device_put(steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
      opt_state=tx.init(variables["params"]), rng=jax.random.key_data(jax.random.PRNGKey(config.seed + 1))), rep)

  has_val = len(va_files) > 0
  if not has_val and cfg.report_checkpoint == "best":
    raise ValueError("train.report_checkpoint='best' needs a validation split (data.val_fraction > 0 or val/)")
  mode = "min" if cfg.best_metric.endswith("loss") else "max"
  ckpts = checkpointing.Checkpoints(workdir, cfg.best_metric if has_val else "", mode)
  # Initialisation order: a checkpoint in the workdir (resume) > init.checkpoint (already merged) > random.
  ckpts.check_method("finetune")
  start = ckpts.latest_step() or 0
  if start:
    state, meta = ckpts.restore(start, state)
    extending = "train.epochs" in config.resume_allow.split(",")  # config_check let the change through.
    if meta["total_steps"] != total and not (extending and total >= start):
      raise ValueError(f"The checkpoint was written by a run of {meta['total_steps']} steps; this config gives "
                       f"{total} (train.epochs, input.batch_size or the split changed). Use a new --workdir"
                       + (f", or train.epochs for at least {start} steps." if extending else "."))
    if meta["total_steps"] != total:
      log(f"Extending the run from {meta['total_steps']} to {total} steps (config.resume_allow=train.epochs): the "
          f"learning-rate schedule now spans {total} steps.")
    log(f"Resuming from step {start}/{total} (epoch {start / steps_per_epoch:.2f}).")

  dtype = steps.compute_dtype(config.dtype)
  train_step = steps.make_train_step(model, tx, mesh, num_classes, config.optim.label_smoothing,
                                     not config.model.freeze_bn_stats, lr, dtype)
  predict = steps.make_predict_step(model, mesh, dtype)
  writer = metric_writer.MetricWriter(workdir, resume_step=start)
  eval_every = max(1, int(round(cfg.eval_every_epochs * steps_per_epoch)))

  stop = {"signal": False}
  previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
  batches = pipeline.train_batches(root, tr_files, tr_labels, pp, config.input, batch, config.seed, start,
                                   total - start)
  bar = progress.bar(total=total, initial=start, desc="train", unit="step", disable=jax.process_index() != 0,
                     every_fraction=0.1)
  last_log, last_t = start, time.perf_counter()
  stopped = False
  for step in range(start, total):
    local = next(batches)
    state, train_metrics = train_step(state, sharding.global_batch(local, mesh))
    done = step + 1
    if done % cfg.log_every_steps == 0 or done == total:
      m = jax.device_get(train_metrics)
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"Non-finite loss {m['loss']} at step {done}; lower optim.lr or check the data")
      now = time.perf_counter()
      ips = (done - last_log) * batch / (now - last_t)
      last_log, last_t = done, now
      writer.write(done, epoch=done / steps_per_epoch, train_loss=m["loss"], train_accuracy=m["accuracy"],
                   lr=m["lr"], images_per_second=ips)
      bar.set_postfix(epoch=f"{done / steps_per_epoch:.1f}", loss=f"{m['loss']:.4f}", img_s=f"{ips:.1f}")
    bar.update(1)

    val = None
    if has_val and (done % eval_every == 0 or done == total):
      logits = steps.run_batches(predict, {"params": state.params, "batch_stats": state.batch_stats}, root,
                                 va_files, va_labels, pp, config.input.eval_batch_size, mesh, num_classes)
      val = {"val_loss": softmax_loss(logits, va_labels), "val_accuracy": float(np.mean(
          logits.argmax(1) == va_labels))}
      writer.write(done, epoch=done / steps_per_epoch, **val)
      last_t = time.perf_counter()  # Keep validation time out of the next images/s figure.
    preempted = stop["signal"]
    if jax.process_count() > 1:  # Every process must agree to save at the same step.
      preempted = bool(multihost_utils.process_allgather(np.int32(preempted)).any())
    stopped = preempted or (cfg.stop_after_steps and done >= cfg.stop_after_steps and done < total)
    if val or stopped or done % cfg.checkpoint_every_steps == 0 or done == total:
      ckpts.save(done, state, {"method": "finetune", "total_steps": total, "epoch": done / steps_per_epoch,
                               "input_position": done * batch}, metrics=val)
    if stopped:
      break
  bar.close()
  writer.close()
  ckpts.wait()
  signal.signal(signal.SIGTERM, previous)
  if stopped:
    why = "SIGTERM" if stop["signal"] else f"train.stop_after_steps={cfg.stop_after_steps}"
    log(f"Stopped at step {done}/{total} ({why}); checkpoint saved. Rerun the same command to resume.")
    ckpts.close()
    if stop["signal"]:
      sys.exit(143)
    return None

  report_step, which = total, "last"
  if cfg.report_checkpoint == "best":
    report_step, which = ckpts.best_step() or total, "best"
    if report_step != total:
      state, _ = ckpts.restore(report_step, state)
  ckpts.close()
  final = {"params": state.params, "batch_stats": state.batch_stats}
  heldout = None  # The validation logits of the reported model: calibration's held-out data.
  if has_val:
    heldout = (steps.run_batches(predict, final, root, va_files, va_labels, pp, config.input.eval_batch_size, mesh,
                                 num_classes), va_labels)
  return final, report_step, which, heldout


def fit_svm(config, workdir, model, variables, data, pp, mesh):
  """DTL2: features of the frozen backbone on the devices, LinearSVC on the host, folded into the head."""
  root, (tr_files, tr_labels) = data["root"], data["train"]
  if len(data["val"][0]):
    log(f"Note: the SVM fits on the {len(data['train'][0])} train images; the {len(data['val'][0])} val images "
        "(data.val_fraction, there for fine-tuning's epoch choice and calibration) are not used by this method"
        + ("; C comes from an inner cross-validation on the train images." if config.svm.select_C else
           f"; C = svm.C = {config.svm.C:g} (svm.select_C=True chooses it by inner cross-validation)."))
  rep = sharding.replicated(mesh)
  variables = jax.device_put(variables, rep)
  ckpts = checkpointing.Checkpoints(workdir)
  like = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                          batch_stats=variables["batch_stats"], opt_state={},
                          rng=jax.random.key_data(jax.random.PRNGKey(config.seed)))
  ckpts.check_method("svm")
  if ckpts.latest_step() is not None:
    state, meta = ckpts.restore(ckpts.latest_step(), like)
    log(f"Found a fitted SVM in {workdir} (C={meta['C']}); re-evaluating it.")
    ckpts.close()
    return {"params": state.params, "batch_stats": state.batch_stats}, 0, "svm", _load_heldout(workdir)

  extract = steps.make_feature_step(model, mesh, steps.compute_dtype(config.dtype))
  dim = variables["params"]["head"]["kernel"].shape[0]
  t0 = time.perf_counter()
  feats = steps.run_batches(extract, variables, root, tr_files, tr_labels, pp, config.input.eval_batch_size,
                            mesh, dim)
  log(f"Extracted {len(tr_files)} x {dim} train features in {time.perf_counter() - t0:.1f}s.")
  fit, _ = svm.fit(feats, tr_labels, model.num_classes, config.svm, config.seed)
  log(f"LinearSVC fitted, C={fit.C:g}" + (f" (inner {config.svm.cv_folds}-fold CV on train: {fit.cv})" if fit.cv
                                          else "."))
  params = dict(variables["params"])
  params["head"] = {"kernel": jnp.asarray(fit.kernel), "bias": jnp.asarray(fit.bias)}
  state = jax.device_put(like.replace(params=params), rep)
  heldout = _save_heldout(workdir, svm.heldout_margins(feats, tr_labels, model.num_classes, config.svm, fit.C,
                                                       config.seed), tr_labels)
  ckpts.save(0, state, {"method": "svm", "C": fit.C, "cv_accuracy": fit.cv, "multiclass": config.svm.multiclass})
  ckpts.close()
  return {"params": state.params, "batch_stats": state.batch_stats}, 0, "svm", heldout


def _save_heldout(workdir, scores, labels):
  """Cross-validated train-split scores (for calibration), kept so that a re-evaluation finds them."""
  if scores is None:
    return None
  if jax.process_index() == 0:
    fileio.savez(rundir.path(workdir, rundir.HELDOUT_SCORES), scores=scores, labels=labels)
  return scores, labels


def _load_heldout(workdir):
  path = rundir.path(workdir, rundir.HELDOUT_SCORES)
  if not fileio.exists(path):
    return None
  with fileio.open(path, "rb") as f:
    z = np.load(f)
    return z["scores"], z["labels"]


def run_dsift(config, workdir, data, num_classes):
  """The dense SIFT baseline: returns ({split: scores} for test and holdout, held-out train scores)."""
  root, (tr_files, tr_labels) = data["root"], data["train"]
  model = dsift.load(workdir)
  if model is None:
    t0 = time.perf_counter()
    model, h = dsift.fit(root, tr_files, tr_labels, num_classes, config, config.seed, log)
    _save_heldout(workdir, dsift.heldout_scores(h, tr_labels, num_classes, model, config, config.seed), tr_labels)
    if jax.process_index() == 0:
      dsift.save(workdir, model)
    log(f"dsift fitted in {time.perf_counter() - t0:.1f}s; model in {os.path.join(workdir, dsift.MODEL_FILE)}")
  else:
    log(f"Found a fitted dsift model in {workdir}; re-evaluating it.")
  size = int(model["size"])
  out = {}
  for split in ("test", "holdout"):
    files = data[split][0]
    if files:
      h = dsift.histograms(dsift.all_descriptors(root, files, config.dsift, size, f"dsift: {split}"), model["centers"])
      out[split] = dsift.scores(model, h, num_classes)
  return out, _load_heldout(workdir)


# == The run ===========================================================================================================
def run_methods(config, workdir, methods):
  """config.method="svm,finetune": each method in WORKDIR/<method>/ on the same data and split, then a comparison."""
  root = data_dir_for(config.data, workdir)
  results = {}
  for method in methods:
    log(f"== {method} ({len(results) + 1}/{len(methods)}) " + "=" * 60)
    c = config.copy_and_resolve_references()
    c.method, c.data.dir = method, root
    c.leakage.cache = c.leakage.cache or os.path.join(workdir, "leakage_cache.json.gz")  # Once for all methods.
    results[method] = run(c, os.path.join(workdir, method))
    if results[method] is None:  # Stopped (preemption, stop_after_steps): rerunning resumes this method.
      return None
  if jax.process_index() == 0:
    report.write_comparison(workdir, results, config)
  log(f"Comparison of {', '.join(methods)} in {os.path.join(workdir, 'report.md')}")
  return results


def run(config, workdir):
  """Runs config in workdir; returns the metrics dict (None when the run stopped before the end).

  With several methods (config.method="svm,finetune") returns {method: metrics dict} (see run_methods). The
  workdir is locked for the run (jfacediag/workdir_lock.py): a second run on it stops at once, naming the first.
  """
  config_check.validate(config)
  images.MAX_PIXELS = int(config.data.max_megapixels * 1e6)
  sharding.maybe_initialize_distributed(config.distributed)
  workdir = fileio.absolute(workdir)
  if not fileio.is_remote(workdir) and os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file, not a directory")
  fileio.makedirs(workdir)
  with workdir_lock.held(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _run(config, workdir)


def _trained(workdir):
  """The workdir holds a trained state: an orbax checkpoint step or a fitted dsift model."""
  ckpt = os.path.join(workdir, "checkpoints")
  steps_dirs = [d for d in (fileio.listdir(ckpt) if fileio.exists(ckpt) else []) if d.rstrip("/").isdigit()]
  return bool(steps_dirs) or fileio.exists(os.path.join(workdir, dsift.MODEL_FILE))


def _run(config, workdir):
  # == Setup: methods, workdir =======================================================================================
  methods = [m.strip() for m in config.method.split(",")]
  if len(methods) > 1:
    return run_methods(config, workdir, methods)
  on = "dense SIFT (no network)" if config.method == "dsift" else config.model.backbone
  log(f"jfacediag: {config.method} on {on}; {jax.device_count()} device(s) "
      f"({jax.devices()[0].platform}), {jax.process_count()} process(es); workdir {workdir}")
  if jax.process_index() == 0:
    changed = config_check.check_resume(config, workdir, _trained(workdir))
    if changed:
      log("Resuming with changed settings (config.resume_allow): "
          + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    with fileio.open(rundir.path(workdir, rundir.CONFIG), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # == Data: folder, split (manifest), per-split file lists ==========================================================
  root = data_dir_for(config.data, workdir)
  rows, classes, leak = load_split(config, root, workdir)
  data = {"root": root, **{s: splits.examples(rows, classes, s) for s in ("train", "val", "test", "holdout")}}
  skipped = [(r.file, r.class_name, r.reason) for r in rows if r.split == "skipped"]
  counts = {s: len(data[s][0]) for s in ("train", "val", "test", "holdout") if s != "holdout" or data[s][0]}
  log(f"Data {root}: {len(classes)} classes, {counts}; {len(skipped)} file(s) skipped"
      + "".join(f"\n  skipped {f}: {r}" for f, _, r in skipped[:20])
      + (f"\n  ... and {len(skipped) - 20} more (WORKDIR/manifest.csv lists them)" if len(skipped) > 20 else ""))
  if leak is not None:
    key = (root, hash(tuple(sorted((r.file, r.split) for r in rows))))
    if key in _LEAK_SHOWN:  # A multi-method run: the same data and split as the method before.
      log(f"Leakage guard: as reported above for this data and split ({sum(leak['cross_split'].values())} pair(s) "
          "across the split).")
    else:
      _LEAK_SHOWN.add(key)
      log(("WARNING: leakage: " if sum(leak["cross_split"].values()) else "Leakage guard: ")
          + "\n".join(leakage.summary_lines(leak)))
  for s in ("train", "test"):
    if not counts[s]:
      raise ValueError(f"The {s} split is empty; check data.split and the folder {root}")
  check_classes(rows, classes, root, config)

  # == Method ========================================================================================================
  te_files, te_labels = data["test"]
  spec, pp = None, None
  if config.method == "dsift":
    by_split, heldout = run_dsift(config, workdir, data, len(classes))
    step, which = 0, "dsift"
  else:
    spec, pp, model, variables = build_model(config, classes, root)
    mesh = sharding.make_mesh()
    method = finetune if config.method == "finetune" else fit_svm
    result = method(config, workdir, model, variables, data, pp, mesh)
    if result is None:
      return None
    final, step, which, heldout = result
    predict = steps.make_predict_step(model, mesh, steps.compute_dtype(config.dtype))
    by_split = {s: steps.run_batches(predict, final, root, *data[s], pp, config.input.eval_batch_size, mesh,
                                     len(classes)) for s in ("test", "holdout") if data[s][0]}

  # == Calibration on held-out training data, test metrics, report ===================================================
  kind = "temperature" if config.method == "finetune" else "platt"
  if not config.calibration.enabled:
    cal = calibration.Calibrator("none", {}, 0, "calibration.enabled = False")
  elif heldout is None:
    cal = calibration.fit(kind, np.zeros((0, len(classes))), np.zeros(0, np.int32), len(classes))
  else:
    cal = calibration.fit(kind, heldout[0], heldout[1], len(classes))
  raw = by_split["test"]
  scores = calibration.softmax(raw) if config.method == "finetune" else raw
  positive = classes.index(config.eval.positive_class) if config.eval.positive_class else 1
  results = metrics_lib.compute(te_labels, scores, classes, "softmax" if config.method == "finetune" else
                                "svm_margin", config.eval.bootstrap, config.seed, positive)
  before, after = calibration.softmax(raw), cal(raw)
  results["calibration"] = calibration.summary(before, after, te_labels, cal)
  results["leakage"] = ({k: leak[k] for k in ("pairs", "cross_split", "top_cross_split")}
                        | {"summary": leakage.summary_lines(leak)[0]} if leak is not None else None)
  if config.eval.metadata:
    meta = confounds.load(config.eval.metadata, [r.file for r in rows])
    results["confounds"] = confounds.analyse(meta, rows, classes, te_files, te_labels, scores.argmax(1))
    for w in results["confounds"]["warnings"]:
      log(f"WARNING: confound: {w}")
  if jax.process_index() == 0:
    summary = {"method": config.method, "backbone": spec.name if spec else "dense SIFT + bag of words",
               "workdir": workdir, "checkpoint_step": step, "checkpoint": which,
               "init_checkpoint": config.init.checkpoint if spec else "none (no network)", "split_counts": counts,
               "preprocessing": pp.to_dict() if pp else None, "data_dir": root, "paper_row": config.eval.paper_row,
               "input_size": pp.input_size if pp else None}
    if spec and spec.members:
      summary["ensemble"] = ensemble.facts(spec, [c.strip() for c in config.init.checkpoint.split(",") if c.strip()])
    report.write(workdir, results, te_files, te_labels, scores, classes, metric_writer.read_history(workdir),
                 skipped, summary, probs=after, leak=leak)
    rundir.write_json(workdir, rundir.CALIBRATION, cal.to_dict())
    calibration.reliability_png(rundir.path(workdir, rundir.RELIABILITY), before, after, te_labels,
                                f"{report.figure_title(summary)}\n{cal.describe()}")
    if "holdout" in by_split:
      report.write_scores(rundir.path(workdir, rundir.HOLDOUT_PREDICTIONS), data["holdout"][0],
                          data["holdout"][1], by_split["holdout"], cal(by_split["holdout"]), classes)
  acc = results["accuracy"]
  log(f"Test accuracy {100 * acc['value']:.1f}% "
      + (f"(95% CI {100 * acc['ci95'][0]:.1f}-{100 * acc['ci95'][1]:.1f}) " if acc["ci95"] else "")
      + f"on {len(te_files)} images; calibration: {cal.describe()}; report in {rundir.path(workdir, rundir.REPORT)}")
  return results


def build_model(config, classes, root):
  """Registry backbone + fresh head; converted weights (init.checkpoint) merged into the backbone. An ensemble
  (model.backbone="ensemble") takes one weights directory per member, comma-separated in init.checkpoint."""
  names = [c.strip() for c in config.init.checkpoint.split(",") if c.strip()]
  loaded = [(name, *weights.load(builtin.resolve(name))) for name in names]
  if config.model.backbone == ensemble.NAME:
    spec = ensemble.make_spec([(meta["arch"], mpp) for _, _, meta, mpp in loaded], config.model.ensemble_combine,
                              config.model.input_size)
    pp, members = spec.preprocessing, [f"members_{k}" for k in range(len(loaded))]
  else:
    if len(loaded) > 1:
      raise ValueError(f"init.checkpoint names {len(loaded)} weights; several need model.backbone='ensemble'")
    spec = models.get(config.model.backbone)
    pp, members = (loaded[0][3] if loaded else spec.preprocessing), [""]
    if loaded and loaded[0][2]["arch"] != spec.name:
      raise ValueError(f"init.checkpoint holds {loaded[0][2]['arch']!r} weights but model.backbone={spec.name!r}")
  pp = pp.at_size(config.model.input_size)
  aligned = aligned_folder.settings(root)
  if aligned:  # jfacediag.align wrote the network's crop: feed it whole, never crop it a second time.
    pp = pp.for_crops()
  model = classifier.Classifier(spec.make(), len(classes), config.model.head_dropout)
  variables = flax.core.unfreeze(steps.init_variables(model, config.seed, pp.input_size))
  for member, (name, tree, meta, _) in zip(members, loaded):
    where = f"backbone/{member}" if member else "backbone"
    for col in ("params", "batch_stats"):
      if not variables[col]:  # No BatchNorm anywhere.
        continue
      parent, key = (variables[col]["backbone"], member) if member else (variables[col], "backbone")
      if key not in parent and not tree[col]:  # A member without BatchNorm.
        continue
      parent[key] = weights.merge(parent[key], tree[col], config.init.dont_load, f"{where} {col}")
    log(f"Loaded {where} weights from {name} ({meta.get('source', 'unknown source')}).")
  log(f"Input {pp.input_size}x{pp.input_size} {pp.channel_order}, mean {pp.mean}, std {pp.std}"
      + (f"; {root} holds {aligned['style']} crops, fed whole." if aligned else
         f"; shorter side resized to {pp.resize_size}, centre {pp.input_size}."))
  warn_alignment(root, spec)
  return spec, pp, model, variables


def default_workdir():
  """runs/<config file stem>[-<config argument>], for a command line without --workdir."""
  path, _, arg = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", name + ("-" + re.sub(r"[^\w.-]+", "_", arg) if arg else ""))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO.
  workdir = _WORKDIR.value or default_workdir()
  if not _WORKDIR.value:
    log(f"--workdir not given: using {workdir}")
  status = cli_front.one_line_errors(run, _CONFIG.value, workdir)
  if status:
    sys.exit(status)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
