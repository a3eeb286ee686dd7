import numpy as np
import pytest

from jfacediag import metrics


def test_binary_metrics_match_hand_counts():
  # 10 positives (class 1): 8 found; 10 negatives: 7 correct -> tp 8, fn 2, tn 7, fp 3.
  y = np.array([1] * 10 + [0] * 10)
  pred = np.array([1] * 8 + [0] * 2 + [0] * 7 + [1] * 3)
  scores = np.eye(2)[pred] * 0.8 + 0.1
  m = metrics.compute(y, scores, ["healthy", "disease"], "softmax", bootstrap=300, seed=0)
  pc = m["per_class"]["disease"]
  assert m["accuracy"]["value"] == pytest.approx(15 / 20)
  assert pc["precision"]["value"] == pytest.approx(8 / 11)
  assert pc["recall"]["value"] == pytest.approx(8 / 10)
  assert pc["specificity"]["value"] == pytest.approx(7 / 10)
  assert pc["f1"]["value"] == pytest.approx(2 * 8 / (2 * 8 + 3 + 2))
  assert m["confusion_matrix"] == [[7, 3], [2, 8]]
  assert m["positive_class"] == "disease"
  lo, hi = m["accuracy"]["ci95"]
  assert lo < 0.75 < hi and hi - lo > 0.2  # 20 images: a wide interval.
  cp_lo, cp_hi = m["accuracy"]["clopper_pearson95"]
  assert cp_lo == pytest.approx(0.509, abs=1e-3) and cp_hi == pytest.approx(0.913, abs=1e-3)


def test_auc_uses_scores_and_multiclass_is_one_vs_rest():
  y = np.array([0, 0, 1, 1, 2, 2])
  scores = np.array([[.9, .05, .05], [.4, .5, .1], [.2, .7, .1], [.1, .8, .1], [.1, .1, .8], [.3, .3, .4]])
  m = metrics.compute(y, scores, ["a", "b", "c"], "softmax", bootstrap=0)
  assert m["accuracy"]["ci95"] is None
  assert m["roc_auc"]["per_class"]["a"] == pytest.approx(1.0)
  assert m["roc_auc"]["per_class"]["b"] == pytest.approx(1.0)
  assert m["roc_auc"]["value"] == pytest.approx(np.mean(list(m["roc_auc"]["per_class"].values())))
  m2 = metrics.compute(y, scores[:, ::-1], ["a", "b", "c"], "softmax", bootstrap=0)  # Scores of other classes.
  assert m2["roc_auc"]["value"] < m["roc_auc"]["value"]


def test_bootstrap_is_seeded():
  rng = np.random.default_rng(0)
  y, scores = rng.integers(0, 3, 40), rng.random((40, 3))
  a = metrics.compute(y, scores, ["a", "b", "c"], "softmax", bootstrap=100, seed=1)
  b = metrics.compute(y, scores, ["a", "b", "c"], "softmax", bootstrap=100, seed=1)
  assert a == b
