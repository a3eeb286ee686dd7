"""WORKDIR/report/: metrics.json, predictions.csv, confusion_matrix.png, curves.png, roc.png (2 classes), report.md;
and for a multi-method run WORKDIR/report.md + comparison.json (`write_comparison`)."""
import csv
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from sklearn import metrics as skm

from jfacediag import fileio


def _save(fig, path):
  with fileio.open(path, "wb") as f:
    fig.savefig(f, dpi=110, format="png")


def _fmt(m, pct=True):
  if m["value"] is None:
    return "n/a"
  f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
  ci = f" [{f(m['ci95'][0])}, {f(m['ci95'][1])}]" if m.get("ci95") else ""
  return f(m["value"]) + ci


def _confusion_png(path, cm, classes):
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
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def _curves_png(path, history):
  train = [h for h in history if "train_loss" in h]
  val = [h for h in history if "val_loss" in h]
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
  if train:
    a.plot([h["epoch"] for h in train], [h["train_loss"] for h in train], label="train", alpha=0.8)
    b.plot([h["epoch"] for h in train], [h["train_accuracy"] for h in train], label="train (augmented)", alpha=0.8)
  if val:
    a.plot([h["epoch"] for h in val], [h["val_loss"] for h in val], "o-", label="val")
    b.plot([h["epoch"] for h in val], [h["val_accuracy"] for h in val], "o-", label="val")
  if not train and not val:
    a.text(0.5, 0.5, "no training curves (svm method)", ha="center", transform=a.transAxes)
  for ax, name in ((a, "loss"), (b, "accuracy")):
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    if train or val:
      ax.legend()
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def _roc_png(path, y, scores, classes, positive, auc):
  fpr, tpr, _ = skm.roc_curve(y == positive, scores[:, positive])
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(fpr, tpr, label=f"AUC {_fmt(auc, pct=False)}")
  ax.plot([0, 1], [0, 1], "--", color="grey")
  ax.set_xlabel("1 - specificity")
  ax.set_ylabel(f"sensitivity ({classes[positive]})")
  ax.legend(loc="lower right")
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)


def write(report_dir, metrics, files, y, scores, classes, history, skipped, summary):
  """Writes every report file. `skipped` = [(file, class, reason)]; `summary` = run facts for report.md."""
  fileio.makedirs(report_dir)
  metrics = {**metrics, "skipped_files": [{"file": f, "class": c, "reason": r} for f, c, r in skipped],
             "run": summary}
  with fileio.open(os.path.join(report_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)

  pred = scores.argmax(1)
  with fileio.open(os.path.join(report_dir, "predictions.csv"), "w") as f:
    w = csv.writer(f)
    w.writerow(["file", "true", "predicted", "correct"] + [f"score_{c}" for c in classes])
    for i, name in enumerate(files):
      w.writerow([name, classes[y[i]], classes[pred[i]], int(pred[i] == y[i])] + [f"{s:.6g}" for s in scores[i]])

  _confusion_png(os.path.join(report_dir, "confusion_matrix.png"), metrics["confusion_matrix"], classes)
  _curves_png(os.path.join(report_dir, "curves.png"), history)
  positive = classes.index(metrics["positive_class"]) if len(classes) == 2 else None
  if positive is not None:
    _roc_png(os.path.join(report_dir, "roc.png"), y, scores, classes, positive, metrics["roc_auc"])

  n = metrics["num_test"]
  md = [f"# jfacediag report: {summary['method']} on {summary['backbone']}", "",
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
  md += ["", "Confusion matrix (rows = true class): `confusion_matrix.png`. Curves: `curves.png`."
         + (" ROC: `roc.png`." if positive is not None else ""), "",
         f"## Skipped files ({len(skipped)})", ""]
  md += [f"- `{f}` ({c}): {r}" for f, c, r in skipped] or ["None: every file was readable."]
  md += ["", "## Caveats", "",
         f"- {n} test images: intervals are wide; compare runs by their intervals, not their point estimates.",
         "- A single split. Repeated cross-validation (`data.split=kfold`) gives a better estimate.",
         "- This is a research tool, not a medical device."]
  with fileio.open(os.path.join(report_dir, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")


def write_comparison(workdir, results, config):
  """WORKDIR/report.md + comparison.json: the methods of one multi-method run (same data, same split) side by side."""
  rows = {m: {"accuracy": r["accuracy"], "roc_auc": r["roc_auc"]["value"], "macro_f1": r["macro"]["f1"],
              "num_test": r["num_test"], "majority_rate": r["majority_rate"],
              "report": os.path.join(m, "report", "report.md")} for m, r in results.items()}
  with fileio.open(os.path.join(workdir, "comparison.json"), "w") as f:
    json.dump(rows, f, indent=2)
  names = {"svm": "DTL2 (frozen features + linear SVM)", "finetune": "DTL1 (fine-tuning)"}
  md = [f"# jfacediag: {config.model.backbone}, {' vs '.join(results)}", "",
        f"Weights `{config.init.checkpoint or 'random initialisation'}`; the same test split for every method.", "",
        "| method | accuracy % [95% bootstrap] | exact binomial 95% | ROC AUC | macro F1 % | test images | "
        "majority-class rate % | report |", "|---|---|---|---|---|---|---|---|"]
  for m, r in rows.items():
    cp = r["accuracy"]["clopper_pearson95"]
    auc = f"{r['roc_auc']:.3f}" if r["roc_auc"] is not None else "n/a"
    md.append(f"| {names.get(m, m)} | {_fmt(r['accuracy'])} | [{100 * cp[0]:.1f}, {100 * cp[1]:.1f}] | {auc} | "
              f"{_fmt(r['macro_f1'])} | {r['num_test']} | {100 * r['majority_rate']:.1f} | [{m}]({r['report']}) |")
  md += ["", "Intervals that overlap do not separate the methods. This is a research tool, not a medical device."]
  with fileio.open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
