"""Calibrating class scores into probabilities on held-out training data, and measuring calibration.

  temperature  DTL1: softmax(logits / T), T fitted by minimising the negative log-likelihood (Guo et al. 2017).
               One parameter: the predicted class never changes.
  platt        DTL2: one sigmoid per class on its SVM margin, p_c = 1 / (1 + exp(-(a_c m_c + b_c))), fitted by
               logistic regression (Platt 1999), then normalised to sum to 1 (for two classes this is exactly
               Platt's binary sigmoid on the margin). With more classes the normalised sigmoids can reorder two
               close classes: the predicted class stays the argmax of the margins, in the report and in predict.

The held-out scores never come from the test split: DTL1 uses the validation split carved from the training data
(data.val_fraction), DTL2 cross-validated margins on the training split (models fitted without the scored image).

Measures on the test split, before and after: expected calibration error (top-label, 15 equal-width bins) and the
Brier score (mean over images of the squared distance between the probability vector and the one-hot label).
"""
import dataclasses
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from scipy import optimize, special
from sklearn import linear_model

from jfacediag import fileio

BINS = 15
T_RANGE = (0.1, 20.0)  # Temperatures searched.


def softmax(scores):
  return special.softmax(np.asarray(scores, np.float64), axis=1)


def log_loss(logits, labels):
  """Mean negative log-likelihood of `labels` under softmax(logits)."""
  logp = special.log_softmax(np.asarray(logits, np.float64), axis=1)
  return float(-np.mean(np.take_along_axis(logp, np.asarray(labels)[:, None], 1)))


@dataclasses.dataclass
class Calibrator:
  kind: str  # "temperature" | "platt" | "none"
  params: dict
  num_heldout: int = 0
  reason: str = ""  # Why there is no calibration (kind "none").

  def __call__(self, scores):
    scores = np.asarray(scores, np.float64)
    if self.kind == "temperature":
      return softmax(scores / self.params["temperature"])
    if self.kind == "platt":
      a, b = np.asarray(self.params["a"]), np.asarray(self.params["b"])
      if scores.shape[1] == 2:  # Binary: the folded head gives (-m, m); Platt's sigmoid on m.
        p1 = special.expit(a[1] * scores[:, 1] + b[1])
        return np.stack([1 - p1, p1], 1)
      p = special.expit(a * scores + b)
      return p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return softmax(scores)

  def describe(self):
    if self.kind == "temperature":
      return (f"temperature scaling, T = {self.params['temperature']:.3g} (on {self.num_heldout} held-out images"
              + ("; T is at the top of its range " + str(T_RANGE) + ": the model is far more confident than its "
                 "held-out accuracy supports" if self.params.get("at_bound") else "") + ")")
    if self.kind == "platt":
      return f"Platt scaling of the SVM margins (on {self.num_heldout} cross-validated training images)"
    return f"none ({self.reason}): softmax of the raw scores"

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d):
    return cls(**d)


def fit_temperature(logits, labels):
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)

  def nll(log_t):
    logp = special.log_softmax(logits / np.exp(log_t), axis=1)
    return -logp[np.arange(len(labels)), labels].mean()

  lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
  res = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded")
  t = float(np.exp(res.x))
  if t < 1.0 and ((logits.argmax(1) == labels).all() or res.x - lo < 1e-3):
    # Every held-out image classified correctly: the likelihood keeps rising as T -> 0, and a sharpening T would
    # push the test probabilities to 1e-50 with nothing to justify it. Keep T = 1 and say why.
    return Calibrator("none", {}, len(labels), f"the {len(labels)} held-out images are all classified correctly "
                      f"and confidently, so they cannot tell how over-confident the model is: nothing to calibrate "
                      f"on; the fit would sharpen them to T = {t:.3g}")
  return Calibrator("temperature", {"temperature": t, "at_bound": bool(hi - res.x < 1e-3)}, len(labels))


def fit_platt(margins, labels, num_classes):
  margins, labels = np.asarray(margins, np.float64), np.asarray(labels)
  a, b = np.zeros(num_classes), np.zeros(num_classes)
  for c in range(num_classes) if num_classes > 2 else (1,):
    y = labels == c
    if y.all() or not y.any():
      raise ValueError(f"Platt scaling needs held-out images in and out of class {c}")
    lr = linear_model.LogisticRegression(C=1e4).fit(margins[:, c:c + 1], y)  # ~unregularised, as Platt
    a[c], b[c] = float(lr.coef_[0, 0]), float(lr.intercept_[0])
  return Calibrator("platt", {"a": a.tolist(), "b": b.tolist()}, len(labels))


def fit(kind, scores, labels, num_classes):
  """kind "temperature" (logits) or "platt" (SVM margins); too few held-out images gives kind "none"."""
  labels = np.asarray(labels)
  if len(labels) == 0:
    return Calibrator("none", {}, 0, "no held-out training data; for DTL1 set data.val_fraction > 0")
  if np.bincount(labels, minlength=num_classes).min() < 2:
    return Calibrator("none", {}, len(labels), f"fewer than 2 held-out images in some class ({len(labels)} held out)")
  return fit_temperature(scores, labels) if kind == "temperature" else fit_platt(scores, labels, num_classes)


def ece(probs, labels, bins=BINS):
  """Top-label expected calibration error: sum over confidence bins of |accuracy - confidence| x bin share."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
  idx = np.minimum((conf * bins).astype(int), bins - 1)
  total = 0.0
  for b in range(bins):
    sel = idx == b
    if sel.any():
      total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
  return float(total)


def brier(probs, labels):
  probs = np.asarray(probs)
  onehot = np.eye(probs.shape[1])[np.asarray(labels)]
  return float(((probs - onehot) ** 2).sum(1).mean())


def summary(before, after, labels, calibrator):
  return {"method": calibrator.kind, "description": calibrator.describe(), "params": calibrator.params,
          "num_heldout": calibrator.num_heldout, "bins": BINS,
          "before": {"ece": ece(before, labels), "brier": brier(before, labels)},
          "after": {"ece": ece(after, labels), "brier": brier(after, labels)}}


def _curve(probs, labels, bins=BINS):
  conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
  idx = np.minimum((conf * bins).astype(int), bins - 1)
  xs, ys, ns = [], [], []
  for b in range(bins):
    sel = idx == b
    if sel.any():
      xs.append(conf[sel].mean()), ys.append(correct[sel].mean()), ns.append(int(sel.sum()))
  return xs, ys, ns


def reliability_png(path, before, after, labels, title=""):
  """Reliability diagram: accuracy against confidence per bin, before and after calibration; below each, the test
  images per confidence bin as bars (counts on the curve would overlap where the bins crowd near 1)."""
  fig, axes = plt.subplots(2, 2, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  edges = np.linspace(0, 1, BINS + 1)
  for col, (probs, name) in enumerate(((before, "before"), (after, "after"))):
    ax, hist = axes[0, col], axes[1, col]
    probs = np.asarray(probs)
    xs, ys, _ = _curve(probs, np.asarray(labels))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(xs, ys, "o-", label="accuracy per confidence bin")
    ax.set_title(f"{name}: ECE {ece(probs, labels):.3f}, Brier {brier(probs, labels):.3f}", fontsize=9)
    ax.set_xlim(0, 1.02), ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    counts = np.histogram(probs.max(1), edges)[0]
    hist.bar(edges[:-1], counts, width=1 / BINS, align="edge", color="tab:blue", alpha=0.5)
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylim(0, max(1, counts.max()) * 1.15)
    hist.grid(alpha=0.3)
  axes[0, 0].set_ylabel("accuracy")
  axes[1, 0].set_ylabel("test images")
  axes[0, 1].legend(loc="lower right", fontsize=8)
  if title:
    fig.suptitle("\n".join(textwrap.fill(line, 120) for line in title.splitlines()), fontsize=8)
  fig.tight_layout()
  with fileio.open(path, "wb") as f:
    fig.savefig(f, dpi=110, format="png")
  plt.close(fig)
