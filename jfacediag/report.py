"""WORKDIR/report/: metrics.json, predictions.csv, confusion_matrix.png, curves.png, roc.png (2 classes), report.md;
and for a multi-method run WORKDIR/report.md + comparison.json (`write_comparison`)."""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from sklearn import metrics as skm

from jfacediag import cli_front, confounds, fileio, leakage, methods, metrics as metrics_lib, rundir


def _save(fig, path):
  with fileio.open(path, "wb") as f:
    fig.savefig(f, dpi=110, format="png")


def _fmt(m, pct=True):
  if m["value"] is None:
    return "n/a"
  f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
  ci = f" [{f(m['ci95'][0])}, {f(m['ci95'][1])}]" if m.get("ci95") else ""
  return f(m["value"]) + ci


def figure_title(summary):
  """What every figure of a run says it is: the workdir's name, method and backbone."""
  if not summary:
    return ""
  name = os.path.basename(str(summary.get("workdir", "")).rstrip("/"))
  return f"{name}: {summary.get('method')} on {summary.get('backbone')}"


def _confusion_png(path, cm, classes, title=""):
  cm = np.asarray(cm)
  rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
  ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  for i in range(len(classes)):
    for j in range(len(classes)):
      ax.text(j, i, f"{cm[i, j]}\n{rows[i, j]:.2f}", ha="center", va="center",
              color="white" if rows[i, j] > 0.5 else "black", fontsize=9)
  ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
  ax.set_yticks(range(len(classes)), classes)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true (rows sum to 1)")
  ax.set_title(f"{title}\ntest confusion matrix" if title else "test confusion matrix", fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def _curves_png(path, history, title=""):
  """Training curves; no file when there are none (the svm and dsift methods do not train for epochs)."""
  train = [h for h in history if "train_loss" in h]
  val = [h for h in history if "val_loss" in h]
  if not train and not val:
    return False
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
  if train:
    a.plot([h["epoch"] for h in train], [h["train_loss"] for h in train], label="train", alpha=0.8)
    b.plot([h["epoch"] for h in train], [h["train_accuracy"] for h in train], label="train (augmented)", alpha=0.8)
  if val:
    a.plot([h["epoch"] for h in val], [h["val_loss"] for h in val], "o-", label="val")
    b.plot([h["epoch"] for h in val], [h["val_accuracy"] for h in val], "o-", label="val")
  for ax, name in ((a, "loss"), (b, "accuracy")):
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
  return True


def _roc_png(path, y, scores, classes, positive, auc, title=""):
  fpr, tpr, _ = skm.roc_curve(y == positive, scores[:, positive])
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(fpr, tpr, label=f"AUC {_fmt(auc, pct=False)}")
  ax.plot([0, 1], [0, 1], "--", color="grey")
  ax.set_xlabel("1 - specificity")
  ax.set_ylabel(f"sensitivity ({classes[positive]})")
  ax.legend(loc="lower right")
  ax.set_title(f"{title}\ntest ROC" if title else "test ROC", fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def write_scores(path, files, y, scores, probs, classes):
  """A predictions CSV: raw scores and calibrated probabilities per class."""
  pred = np.asarray(scores).argmax(1)
  with fileio.open(path, "w") as f:
    w = csv.writer(f)
    w.writerow(["file", "true", "predicted", "correct"] + [f"score_{c}" for c in classes]
               + [f"prob_{c}" for c in classes])
    for i, name in enumerate(files):
      w.writerow([name, classes[y[i]], classes[pred[i]], int(pred[i] == y[i])] + [f"{s:.6g}" for s in scores[i]]
                 + [f"{p:.6g}" for p in probs[i]])


def alignment_lines(a):
  """The report's lines on alignment: who aligned the faces, how many fell back to a centre crop, per class, and a
  WARNING when whether a face was found differs between the classes."""
  if not a:
    return []
  if not a["aligned_by"]:
    return ["Not aligned by jfacediag.align: each photo was resized and centre-cropped whole, so faces may be small, "
            "off-centre or missing (`python -m jfacediag.align --src PHOTOS --dst ALIGNED --style STYLE` aligns "
            "them first)."]
  n = sum(v[0] for v in a["per_class"].values())
  k = sum(v[1] for v in a["per_class"].values())
  out = [f"Aligned by jfacediag.align (style {a['style']}, detector {a['detector']}). No face was found in {k} of "
         f"the {n} photos used, which were centre-cropped (--fallback center)"
         + (f"; {a['dropped']} more were left out (no face)" if a["dropped"] else "") + ". Per class: "
         + ", ".join(f"{c} {f}/{m} ({100 * f / max(m, 1):.0f}%)" for c, (m, f) in a["per_class"].items()) + "."]
  if a["p_value"] is not None and a["p_value"] < 0.05:
    out.append(f"WARNING: whether a face was found differs between the classes (p = {a['p_value']:.2g}): a "
               "classifier can learn that instead of anything medical (a faceless centre crop predicts its class). "
               "Check these photos, or leave them out (align without --fallback center).")
  return out


def write(workdir, metrics, files, y, scores, classes, history, skipped, summary, probs=None, leak=None):
  """Writes every report file into WORKDIR/report. `skipped` = [(file, class, reason)]; `summary` = run facts for
  report.md; `probs` = calibrated probabilities (predictions.csv prob_* columns); `leak` = the leakage guard's
  result."""
  report_dir = rundir.path(workdir, rundir.REPORT)
  metrics = {**metrics, "skipped_files": [{"file": f, "class": c, "reason": r} for f, c, r in skipped],
             "run": summary}
  rundir.write_json(workdir, rundir.METRICS, metrics)

  write_scores(rundir.path(workdir, rundir.PREDICTIONS), files, y, scores, scores if probs is None else probs,
               classes)

  title = figure_title(summary)
  _confusion_png(os.path.join(report_dir, "confusion_matrix.png"), metrics["confusion_matrix"], classes, title)
  has_curves = _curves_png(os.path.join(report_dir, "curves.png"), history, title)
  positive = classes.index(metrics["positive_class"]) if len(classes) == 2 else None
  if positive is not None:
    _roc_png(os.path.join(report_dir, "roc.png"), y, scores, classes, positive, metrics["roc_auc"], title)

  n = metrics["num_test"]
  md = [f"# jfacediag report: {summary['method']} on {summary['backbone']}", ""]
  md += [f"**WARNING: {w}**" for w in metrics.get("warnings", [])] + ([""] if metrics.get("warnings") else [])
  md += [
        f"Workdir `{summary['workdir']}`, checkpoint step {summary['checkpoint_step']} ({summary['checkpoint']}), "
        f"weights `{summary['init_checkpoint'] or 'random initialisation'}`.", "",
        f"Split: {summary['split_counts']}. Scores: {metrics['score_type']}.", "",
        "## Test results", "",
        f"Accuracy **{_fmt(metrics['accuracy'])}** % on {n} test images (95% bootstrap interval in brackets; "
        f"exact binomial interval [{100 * metrics['accuracy']['clopper_pearson95'][0]:.1f}, "
        f"{100 * metrics['accuracy']['clopper_pearson95'][1]:.1f}]). One image is {100 / max(n, 1):.1f} points; "
        f"always answering the largest class would score {100 * metrics['majority_rate']:.1f} %.", "",
        f"ROC AUC {_fmt(metrics['roc_auc'], pct=False)}"
        + (f" (positive class: {metrics['positive_class']})" if positive is not None else " (mean one-vs-rest)"), "",
        "| class | support | precision | recall (sensitivity) | specificity | F1 |", "|---|---|---|---|---|---|"]
  for c in classes:
    m = metrics["per_class"][c]
    md.append(f"| {c} | {m['support']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
              f"{_fmt(m['specificity'])} | {_fmt(m['f1'])} |")
  m = metrics["macro"]
  md.append(f"| macro | {n} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['specificity'])} | "
            f"{_fmt(m['f1'])} |")
  md += ["", "Confusion matrix (rows = true class): `confusion_matrix.png`."
         + (" Training curves: `curves.png`." if has_curves else "")
         + (" ROC: `roc.png`." if positive is not None else "")]
  cal = metrics.get("calibration")
  if cal:
    md += ["", "## Calibration", "", f"Probabilities (`prob_*` in predictions.csv): {cal['description']}.", "",
           "| test split | ECE (15 bins) | Brier |", "|---|---|---|",
           f"| before (softmax of the raw scores) | {cal['before']['ece']:.3f} | {cal['before']['brier']:.3f} |",
           f"| after | {cal['after']['ece']:.3f} | {cal['after']['brier']:.3f} |", "",
           "Reliability diagram: `reliability.png`. Calibration changes probabilities, not the top class (two "
           "classes) or accuracy above."]
  md += ["", "## Leakage guard", ""]
  md += leakage.report_md(leak)
  if metrics.get("confounds"):
    md += ["", "## Confounds (eval.metadata)", ""] + confounds.report_lines(metrics["confounds"])
  md += ["", "## Alignment", ""] + (alignment_lines(summary.get("alignment")) or ["Not recorded."])
  md += ["", f"## Skipped files ({len(skipped)})", ""]
  md += [f"- `{f}` ({c}): {r}" for f, c, r in skipped[:50]] or ["None: every image file was readable (alignment: "
                                                                  "above)."]
  if len(skipped) > 50:
    md.append(f"- ... and {len(skipped) - 50} more (`manifest.csv` in the workdir lists every one).")
  md += ["", "## Caveats", "",
         f"- {n} test images: intervals are wide; compare runs by their intervals, not their point estimates.",
         "- A single split. Repeated cross-validation (`python -m jfacediag.cv`) gives a better estimate.",
         "- This is a research tool, not a medical device."]
  with fileio.open(rundir.path(workdir, rundir.REPORT_MD), "w") as f:
    f.write("\n".join(md) + "\n")


def write_comparison(workdir, results, config):
  """WORKDIR/report.md + comparison.json: the methods of one multi-method run (same data, same split) side by side."""
  rows = {m: {"accuracy": r["accuracy"], "roc_auc": r["roc_auc"], "macro_f1": r["macro"]["f1"],  # As metrics.json.
              "num_test": r["num_test"], "majority_rate": r["majority_rate"],
              "report": rundir.path(m, rundir.REPORT_MD)} for m, r in results.items()}
  rundir.write_json(workdir, rundir.COMPARISON, rows)
  md = [f"# jfacediag: {config.model.backbone}, {' vs '.join(results)}", "",
        f"Weights `{config.init.checkpoint or 'random initialisation'}`; the same test split for every method.", "",
        "| method | accuracy % [95% bootstrap] | exact binomial 95% | ROC AUC | macro F1 % | test images | "
        "majority-class rate % | report |", "|---|---|---|---|---|---|---|---|"]
  for m, r in rows.items():
    cp = r["accuracy"]["clopper_pearson95"]
    auc = _fmt(r["roc_auc"], pct=False)
    md.append(f"| {methods.get(m).LABEL} | {_fmt(r['accuracy'])} | [{100 * cp[0]:.1f}, {100 * cp[1]:.1f}] | {auc} | "
              f"{_fmt(r['macro_f1'])} | {r['num_test']} | {100 * r['majority_rate']:.1f} | [{m}]({r['report']}) |")
  md += ["", "Intervals that overlap do not separate the methods. This is a research tool, not a medical device."]
  warned = {}  # One line per warning, naming the methods it applies to.
  for m, r in results.items():
    for w in r.get("warnings", []):
      warned.setdefault(w, []).append(methods.get(m).SHORT)
  if warned:
    md[2:2] = [f"**WARNING ({', '.join(ms)}): {w}**" for w, ms in warned.items()] + [""]
  with fileio.open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")


# == python -m jfacediag.report runs/* : the paper-format results table ================================================
TABLE_METRICS = metrics_lib.HEADLINE
PAPER_KEYS = {"accuracy": "acc", "precision": "prec", "sensitivity": "sens", "specificity": "spec", "f1": "f1",
              "auc": "auc"}


def table_row(kind, path):
  """One results-table row: {metric: (value, low, high)} plus the facts of the run."""
  from jfacediag import flops, paper  # pylint: disable=g-import-not-at-top
  if kind == "cv":
    res = rundir.read_cv(path)
    config = res["config"]
    if "summary" not in res:
      return None
    vals = {k: (s["mean"], *(s["ci95"] or (None, None))) for k, s in res["summary"].items() if k in TABLE_METRICS}
    evaluation = (f"CV {res['folds']}-fold x {res['repeats']} ({res['finished']}/{res['total']} folds), "
                  "mean [95% CI, corrected t]")
    n_test = res["per_fold"][0]["test"] if res["per_fold"] else 0
    classes = res["classes"]
    size = None
    first = rundir.fold_dir(path, res["per_fold"][0]["fold"])
    if rundir.is_run(first):
      pp = rundir.read_facts(first).get("preprocessing")
      size = pp["input_size"] if pp else None
  else:
    m = rundir.read_metrics(path)
    config = rundir.read_config(path)
    vals = {k: (v, *(ci or (None, None))) for k, (v, ci) in metrics_lib.headline(m).items() if k in TABLE_METRICS}
    evaluation = f"one split, {m['num_test']} test images, value [95% bootstrap]"
    n_test, classes = m["num_test"], m["classes"]
    size = (m["run"].get("preprocessing") or {}).get("input_size")
  row, task = paper.lookup(config["eval"].get("paper_row", ""))
  method = methods.get(config["method"])
  macs = xla = None
  if method.NETWORK and size:
    cost = flops.forward_cost(config["model"]["backbone"], int(size), len(classes))
    macs, xla = cost["macs"], cost["xla_flops"]
  label = row["label"] if row else (f"{method.SHORT} {config['model']['backbone']}" if method.NETWORK else
                                    f"{method.SHORT} {config['dsift']['kernel']}")
  return {"run": path, "label": label, "method": method.NAME, "backbone": config["model"]["backbone"]
          if method.NETWORK else "-", "pretrain": row["pretrain"] if row else (
              config["init"]["checkpoint"] or "random init" if method.NETWORK else "- (no network)"),
          "macs": macs, "xla_flops": xla, "input_size": size, "n_test": n_test, "classes": len(classes),
          "evaluation": evaluation,
          "values": vals, "paper_row": config["eval"].get("paper_row", ""),
          "paper": (row or {}).get(task) if row else None, "paper_flops": (row or {}).get("flops")}


def _cell(v, pct=True):
  value, lo, hi = v
  if value is None:
    return "n/a"
  f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.3f}")
  return f(value) + (f" [{f(lo)}, {f(hi)}]" if lo is not None else "")


def _ops(n):
  return "-" if not n else f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"


def results_table(rows):
  """(markdown lines, csv rows) of the paper-format table."""
  md = ["| method | pretraining | FLOPs (ours / paper) | accuracy % | precision % | sensitivity % | specificity % | "
        "F1 % | AUC | paper: acc / prec / sens / spec / F1 / AUC | evaluation | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  out = []
  for r in rows:
    flops_txt = _ops(r["macs"]) + (f" (XLA {_ops(r['xla_flops'])})" if r["xla_flops"] else "") + " / " + _ops(
        r["paper_flops"])
    p = r["paper"] or {}
    paper_txt = " / ".join(str(p.get(PAPER_KEYS[k], "-")) for k in TABLE_METRICS) if p else "not in the paper"
    md.append(f"| {r['label']} | {r['pretrain']} | {flops_txt} | " + " | ".join(
        _cell(r["values"].get(k, (None, None, None)), k != "auc") for k in TABLE_METRICS)
        + f" | {paper_txt} | {r['evaluation']} | `{r['run']}` |")
    flat = {"run": r["run"], "method": r["label"], "pretraining": r["pretrain"], "paper_row": r["paper_row"],
            "gmacs": f"{r['macs'] / 1e9:.4f}" if r["macs"] else "",
            "xla_gflops": f"{r['xla_flops'] / 1e9:.4f}" if r["xla_flops"] else "", "paper_gflops": (
                f"{r['paper_flops'] / 1e9:.2f}" if r["paper_flops"] else ""), "input_size": r["input_size"] or "",
            "n_test": r["n_test"], "evaluation": r["evaluation"]}
    for k in TABLE_METRICS:
      value, lo, hi = r["values"].get(k, (None, None, None))
      flat.update({k: "" if value is None else f"{value:.4f}", f"{k}_low": "" if lo is None else f"{lo:.4f}",
                   f"{k}_high": "" if hi is None else f"{hi:.4f}", f"paper_{k}": p.get(PAPER_KEYS[k], "")})
    out.append(flat)
  return md, out


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.report", description=(
      "Gathers finished runs and CV directories into the paper's table (Tables 3-6 format) with intervals and the "
      "paper's numbers for the same rows: OUT.md and OUT.csv."))
  ap.add_argument("runs", nargs="+", help="run directories, CV directories, or folders holding them (runs/*)")
  ap.add_argument("--out", default="results", help="output path without extension (default: results)")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def main(argv=None):
  return cli_front.one_line_errors(run, parse(argv))


def run(args):
  """The results table of args.runs into args.out.md and .csv; returns its rows."""
  found, missing = [], []
  for p in args.runs:
    hits = rundir.finished(p)
    (found.extend(hits) if hits else missing.append(p))
  for p in missing:
    print(f"skipped {p}: no finished run (report/metrics.json) or CV (cv.json) in it", file=sys.stderr)
  if not found:
    raise ValueError("no finished run among the arguments")
  rows = [r for r in (table_row(k, p) for k, p in found) if r is not None]
  md, flat = results_table(rows)
  text = "\n".join(["# Results", "", *md, "",
                    "Precision, sensitivity, specificity and F1: the positive class for two classes (the paper: "
                    "beta-thalassemia), macro averages otherwise. FLOPs: multiply-adds of the forward pass counted "
                    "as the paper counts, and XLA's cost analysis of the compiled forward (2 per multiply-add, "
                    "padding taps skipped, elementwise work added; jfacediag/flops.py). Intervals that "
                    "include the paper's number do not contradict it. This is a research tool, not a medical "
                    "device.", ""])
  fileio.makedirs(os.path.dirname(os.path.abspath(args.out)))
  with fileio.open(args.out + ".md", "w") as f:
    f.write(text)
  with fileio.open(args.out + ".csv", "w") as f:
    w = csv.DictWriter(f, list(flat[0]))
    w.writeheader()
    w.writerows(flat)
  print(text)
  print(f"Wrote {args.out}.md and {args.out}.csv ({len(rows)} rows).")
  return rows


if __name__ == "__main__":
  raise SystemExit(main())
