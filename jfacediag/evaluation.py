"""A run's evaluation: calibration on held-out training data, the test metrics with their intervals, the leakage
and confound sections, and the report (WORKDIR/report/, jfacediag/rundir.py names the files).

  results = evaluation.evaluate(config, workdir, ds, outcome, methods.get(config.method))
"""
import jax
import numpy as np

from jfacediag import calibration, confounds, dataset, leakage, metric_writer, metrics as metrics_lib, progress
from jfacediag import report, rundir
from jfacediag.data import aligned_folder
from jfacediag.models import ensemble


def calibrator(config, outcome, method, num_classes):
  if not config.calibration.enabled:
    return calibration.Calibrator("none", {}, 0, "calibration.enabled = False")
  if outcome.heldout is None:
    return calibration.fit(method.CALIBRATION, np.zeros((0, num_classes)), np.zeros(0, np.int32), num_classes)
  return calibration.fit(method.CALIBRATION, *outcome.heldout, num_classes)


def warnings(config, ds, outcome, results):
  """Where a result cannot mean much, said loudly: a network trained from random weights on real photos, and an
  accuracy whose interval does not exclude chance (or could not, with this few test images)."""
  out = []
  if outcome.spec is not None and not config.init.checkpoint and config.data.generate != "toy":
    out.append(f"{outcome.spec.name} was trained from random weights (init.checkpoint is empty). Tens of photos per "
               "class cannot train a face network from scratch: use face-recognition weights (init.checkpoint="
               "'builtin:sface', or converted ones).")
  acc, chance, n = results["accuracy"], results["majority_rate"], results["num_test"]
  low = acc["clopper_pearson95"][0]
  if n and chance is not None and (0.025 ** (1 / n)) <= chance:
    out.append(f"{n} test images cannot show that anything beats chance: even 100% correct would have an exact "
               f"95% interval reaching the majority rate ({100 * chance:.1f}%). Use more test images, or "
               "cross-validation (python -m jfacediag.cv).")
  elif n and chance is not None and low <= chance:
    out.append(f"the accuracy's exact 95% interval [{100 * low:.1f}, {100 * acc['clopper_pearson95'][1]:.1f}] "
               f"includes chance (the majority rate, {100 * chance:.1f}%): this run does not show that the "
               "classifier beats chance.")
  return out


def evaluate(config, workdir, ds, outcome, method):
  """Returns the metrics dict (report/metrics.json); process 0 writes the report."""
  classes, (te_files, te_labels) = ds.classes, ds.test
  cal = calibrator(config, outcome, method, len(classes))
  raw = outcome.scores["test"]
  scores = calibration.softmax(raw) if method.SCORES == "softmax" else raw
  positive = classes.index(config.eval.positive_class) if config.eval.positive_class else 1
  results = metrics_lib.compute(te_labels, scores, classes, method.SCORES, config.eval.bootstrap, config.seed, positive)
  before, after = calibration.softmax(raw), cal(raw)
  results["calibration"] = calibration.summary(before, after, te_labels, cal)
  leak = ds.leak
  results["leakage"] = ({k: leak[k] for k in ("pairs", "cross_split", "top_cross_split")}
                        | {"summary": leakage.summary_lines(leak)[0]} if leak is not None else None)
  if config.eval.metadata:
    # Names in the CSV are the photos' own; an aligned folder (data.align='auto' too) renamed them to its crops.
    aliases = {m["source"]: m["output"] for m in aligned_folder.read_rows(ds.root, aligned_folder.MANIFEST)}
    meta = confounds.load(config.eval.metadata, [r.file for r in ds.rows], aliases)
    results["confounds"] = confounds.analyse(meta, ds.rows, classes, te_files, te_labels, scores.argmax(1))
  aligned = dataset.alignment(ds.root, ds.rows, classes)
  results["warnings"] = (warnings(config, ds, outcome, results)
                         + [w.removeprefix("WARNING: ") for w in report.alignment_lines(aligned)
                            if w.startswith("WARNING")]
                         + [f"confound: {w}" for w in (results.get("confounds") or {}).get("warnings", [])])
  for w in results["warnings"]:
    progress.log(f"WARNING: {w}")
  if jax.process_index() == 0:
    spec, pp = outcome.spec, outcome.pp
    summary = {"method": method.NAME, "backbone": spec.name if spec else "dense SIFT + bag of words",
               "workdir": workdir, "checkpoint_step": outcome.step, "checkpoint": outcome.checkpoint,
               "init_checkpoint": config.init.checkpoint if spec else "none (no network)", "split_counts": ds.counts,
               "preprocessing": pp.to_dict() if pp else None, "data_dir": ds.root, "paper_row": config.eval.paper_row,
               "input_size": pp.input_size if pp else None}
    summary["alignment"] = aligned
    if spec and spec.members:
      summary["ensemble"] = ensemble.facts(spec, [c.strip() for c in config.init.checkpoint.split(",") if c.strip()])
    report.write(workdir, results, te_files, te_labels, scores, classes, metric_writer.read_history(workdir),
                 ds.skipped, summary, probs=after, leak=leak)
    rundir.write_json(workdir, rundir.CALIBRATION, cal.to_dict())
    calibration.reliability_png(rundir.path(workdir, rundir.RELIABILITY), before, after, te_labels,
                                f"{report.figure_title(summary)}\n{cal.describe()}")
    if "holdout" in outcome.scores:
      report.write_scores(rundir.path(workdir, rundir.HOLDOUT_PREDICTIONS), *ds.holdout, outcome.scores["holdout"],
                          cal(outcome.scores["holdout"]), classes)
  acc = results["accuracy"]
  progress.log(f"Test accuracy {100 * acc['value']:.1f}% "
               + (f"(95% CI {100 * acc['ci95'][0]:.1f}-{100 * acc['ci95'][1]:.1f}) " if acc["ci95"] else "")
               + f"on {len(te_files)} images; calibration: {cal.describe()}; report in "
               f"{rundir.path(workdir, rundir.REPORT)}")
  return results
