"""Classification metrics with 95% bootstrap intervals (scikit-learn computes, numpy resamples).

metrics.json keys (every `{"value", "ci95"}` pair is a point estimate and its percentile-bootstrap interval over
test images resampled with replacement; ci95 is null when eval.bootstrap = 0):
  num_test, classes, score_type ("softmax" or "svm_margin"),
  accuracy {value, ci95, clopper_pearson95}          exact binomial interval too
  per_class {class: {precision, recall, specificity, f1: {value, ci95}, support}}
  macro {precision, recall, specificity, f1: {value, ci95}}
  roc_auc {value, ci95, per_class}                   binary: AUC of the positive class; else mean one-vs-rest
  positive_class                                     binary only
  confusion_matrix                                   rows = true class, columns = predicted
"""
import numpy as np
from scipy import stats
from sklearn import metrics as skm


def _point(y, pred, scores, k, positive):
  """The scalar metrics of one (re)sample, as a flat dict."""
  cm = skm.confusion_matrix(y, pred, labels=range(k))
  tp = np.diag(cm).astype(float)
  fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
  tn = cm.sum() - tp - fp - fn
  with np.errstate(divide="ignore", invalid="ignore"):
    prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    rec = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
  out = {"accuracy": float(tp.sum() / max(cm.sum(), 1))}
  for name, v in (("precision", prec), ("recall", rec), ("specificity", spec), ("f1", f1)):
    for c in range(k):
      out[f"{name}/{c}"] = float(v[c])
    out[f"macro/{name}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
  aucs = []
  for c in range(k):
    pos = y == c
    aucs.append(float(skm.roc_auc_score(pos, scores[:, c])) if 0 < pos.sum() < len(y) else float("nan"))
    out[f"auc/{c}"] = aucs[-1]
  out["roc_auc"] = aucs[positive] if k == 2 else (float(np.nanmean(aucs)) if np.isfinite(aucs).any() else np.nan)
  return out


def clopper_pearson(k, n):
  """The exact (Clopper-Pearson) 95% interval [low, high] of k successes in n trials; None when n = 0."""
  if not n:
    return None
  ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="exact")
  return [float(ci.low), float(ci.high)]


def compute(y, scores, classes, score_type, bootstrap=1000, seed=0, positive=1):
  """y: [n] true labels; scores: [n, k] (higher = more likely); returns the metrics.json dict."""
  y, scores = np.asarray(y), np.asarray(scores, np.float64)
  k = len(classes)
  pred = scores.argmax(1)
  point = _point(y, pred, scores, k, positive)
  samples = {}
  if bootstrap:
    rng = np.random.default_rng(seed)
    draws = [_point(y[i], pred[i], scores[i], k, positive)
             for i in (rng.integers(0, len(y), len(y)) for _ in range(bootstrap))]
    samples = {key: np.array([d[key] for d in draws]) for key in point}

  def val(key):
    v = point[key]
    ci = None
    if samples:
      s = samples[key][np.isfinite(samples[key])]
      ci = [float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))] if len(s) else None
    return {"value": None if np.isnan(v) else v, "ci95": ci}

  correct = int((pred == y).sum())
  out = {
      "num_test": len(y), "classes": list(classes), "score_type": score_type,
      # Accuracy of always answering the largest test class: the floor any result must clear.
      "majority_rate": float(np.bincount(y, minlength=k).max() / len(y)) if len(y) else None,
      "accuracy": {**val("accuracy"), "clopper_pearson95": clopper_pearson(correct, len(y))},
      "per_class": {cls: {**{m: val(f"{m}/{c}") for m in ("precision", "recall", "specificity", "f1")},
                          "support": int((y == c).sum())} for c, cls in enumerate(classes)},
      "macro": {m: val(f"macro/{m}") for m in ("precision", "recall", "specificity", "f1")},
      "roc_auc": {**val("roc_auc"), "per_class": {cls: val(f"auc/{c}")["value"] for c, cls in enumerate(classes)}},
      "confusion_matrix": skm.confusion_matrix(y, pred, labels=range(k)).tolist(),
      "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "method": "percentile"},
  }
  if k == 2:
    out["positive_class"] = classes[positive]
  return out


HEADLINE = ("accuracy", "precision", "sensitivity", "specificity", "f1", "auc")


def headline(m):
  """{metric: (value, ci95 or None)} of a metrics.json dict: accuracy, then precision, sensitivity, specificity and
  F1 of the positive class (two classes) or their macro averages, and ROC AUC; plus ECE before/after calibration
  (no interval) when the run was calibrated."""
  src = m["per_class"][m["positive_class"]] if "positive_class" in m else m["macro"]
  pick = {"accuracy": m["accuracy"], "precision": src["precision"], "sensitivity": src["recall"],
          "specificity": src["specificity"], "f1": src["f1"], "auc": m["roc_auc"]}
  out = {k: (v["value"], v.get("ci95")) for k, v in pick.items()}
  if m.get("calibration"):
    out["ece_before"] = (m["calibration"]["before"]["ece"], None)
    out["ece_after"] = (m["calibration"]["after"]["ece"], None)
  return out
