"""DTL2: a linear SVM (scikit-learn LinearSVC) on frozen backbone features, folded into a Dense head.

Standardisation and the SVM are both linear, so the fitted pipeline equals one Dense layer on the raw features:
w' = coef / scale, b' = intercept - (coef * mean / scale).sum(). The resulting head outputs the SVM's decision
values (margins), and the classifier then runs like any fine-tuned one (predict, checkpoint, report).
"""
import dataclasses

import numpy as np
from sklearn import model_selection, pipeline, preprocessing, svm


@dataclasses.dataclass
class Fit:
  kernel: np.ndarray  # [features, classes]
  bias: np.ndarray  # [classes]
  C: float
  cv: dict  # C -> mean inner-CV accuracy (empty when C was given)


def fit(features, labels, num_classes, cfg, seed):
  """Fits StandardScaler + LinearSVC on the train split only (cfg = config.svm). C from cfg or inner CV."""
  def make(C):
    steps = [("scale", preprocessing.StandardScaler(with_mean=cfg.standardize, with_std=cfg.standardize)),
             ("svm", svm.LinearSVC(C=C, multi_class=cfg.multiclass, max_iter=cfg.max_iter, random_state=seed,
                                   dual="auto"))]
    return pipeline.Pipeline(steps)

  if cfg.multiclass not in ("ovr", "crammer_singer"):
    raise ValueError(f"svm.multiclass={cfg.multiclass!r}; expected 'ovr' or 'crammer_singer'")
  cv = {}
  C = cfg.C
  if cfg.select_C:
    grid = [float(c) for c in cfg.C_grid]
    folds = min(cfg.cv_folds, int(np.bincount(labels, minlength=num_classes).min()))
    if folds < 2:
      raise ValueError(f"svm.select_C needs at least 2 training images per class (smallest class has {folds})")
    search = model_selection.GridSearchCV(
        make(1.0), {"svm__C": grid}, scoring="accuracy",
        cv=model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed))
    search.fit(features, labels)
    cv = {str(c): float(s) for c, s in zip(grid, search.cv_results_["mean_test_score"])}
    C = float(search.best_params_["svm__C"])
  model = make(C).fit(features, labels)
  scaler, lsvc = model.named_steps["scale"], model.named_steps["svm"]
  coef, intercept = lsvc.coef_.astype(np.float64), lsvc.intercept_.astype(np.float64)
  if num_classes == 2:  # One margin m for class 1: logits (-m, m) give the same decision and scores.
    coef, intercept = np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
  mean = scaler.mean_ if cfg.standardize else np.zeros(features.shape[1])
  scale = scaler.scale_ if cfg.standardize else np.ones(features.shape[1])
  w = coef / scale
  b = intercept - (w * mean).sum(axis=1)
  return Fit(w.T.astype(np.float32), b.astype(np.float32), C, cv), model


def heldout_scores(num_items, labels, num_classes, seed, fit_and_score):
  """Cross-validated scores on the train split: fit_and_score(train_idx, test_idx) -> scores of test_idx, from a
  model fitted without them (5 stratified folds, fewer when a class is smaller). None when a class has < 2 images."""
  folds = min(5, int(np.bincount(labels, minlength=num_classes).min()))
  if folds < 2:
    return None
  out = np.zeros((num_items, num_classes))
  for a, b in model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed).split(
      np.zeros(num_items), labels):
    out[b] = fit_and_score(a, b)
  return out


def heldout_margins(features, labels, num_classes, cfg, C, seed):
  """Cross-validated LinearSVC margins (folded-head form) at the chosen C: the held-out data for Platt scaling."""
  fixed = cfg.copy_and_resolve_references()
  fixed.select_C, fixed.C = False, float(C)

  def fit_and_score(a, b):
    f, _ = fit(features[a], labels[a], num_classes, fixed, seed)
    return features[b] @ f.kernel + f.bias
  return heldout_scores(len(labels), labels, num_classes, seed, fit_and_score)
