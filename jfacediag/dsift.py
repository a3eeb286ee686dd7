"""The paper's classical baseline (Tables 3 and 5, first rows): dense SIFT + bag of visual words + SVM.

Each image is read grey at dsift.input_size, SIFT descriptors (OpenCV, 128-d) are computed on a dense grid
(step dsift.step, support dsift.patch), k-means on descriptors of the train split gives the vocabulary, and each
image becomes its L1-normalised histogram of visual words. The SVM is linear (LinearSVC, with svm.* settings,
C by inner CV when svm.select_C) or uses the exponential chi-squared kernel exp(-gamma chi2(x, y)) with gamma =
1 / mean chi2 distance on train (SVC, C by inner CV likewise). No network is involved; the model is saved as
WORKDIR/dsift_model.npz (arrays only) and a rerun re-evaluates it.
"""
import os

import cv2
import numpy as np
from sklearn import cluster, metrics, model_selection, svm as sk_svm

from jfacediag import fileio, progress, svm
from jfacediag.data import images

MODEL_FILE = "dsift_model.npz"


def descriptors(path, size, step, patch):
  rgb = images.load_rgb(path)
  grey = cv2.cvtColor(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
  half = patch // 2
  kps = [cv2.KeyPoint(float(x), float(y), float(patch)) for y in range(half, size - half + 1, step)
         for x in range(half, size - half + 1, step)]
  _, desc = cv2.SIFT_create().compute(grey, kps)
  return desc.astype(np.float32)


def all_descriptors(root, files, cfg, size, desc="dsift"):
  return [descriptors(os.path.join(root, f), size, cfg.step, cfg.patch)
          for f in progress.bar(files, desc=desc, unit="img", leave=False)]


def histograms(descs, centers):
  k = len(centers)
  out = np.zeros((len(descs), k), np.float32)
  for i, d in enumerate(descs):
    words = metrics.pairwise_distances_argmin(d, centers)
    h = np.bincount(words, minlength=k).astype(np.float32)
    out[i] = h / max(h.sum(), 1)
  return out


def chi2_distance(x, y):
  num = (x[:, None, :] - y[None, :, :]) ** 2
  den = x[:, None, :] + y[None, :, :]
  return 0.5 * np.where(den > 0, num / np.where(den > 0, den, 1), 0).sum(-1)


def _chi2_fit(h, labels, num_classes, C, gamma, seed):
  """One-vs-rest SVCs on the precomputed kernel (one for class 1 when binary), as arrays: per class an alpha over
  all train images (zero off the support vectors) and an intercept, so decision = K(x, train) @ alpha + b."""
  gram = np.exp(-gamma * chi2_distance(h, h))
  alpha, bias = [], []
  for c in range(num_classes) if num_classes > 2 else (1,):
    m = sk_svm.SVC(C=C, kernel="precomputed", random_state=seed).fit(gram, labels == c)
    a = np.zeros(len(h))
    a[m.support_] = m.dual_coef_[0]
    # scikit-learn's binary decision_function is positive for classes_[1] (True): check the arrays reproduce it.
    sign = 1.0 if np.allclose(gram[:3] @ a + m.intercept_[0], m.decision_function(gram[:3]), atol=1e-6) else -1.0
    alpha.append(sign * a), bias.append(sign * m.intercept_[0])
  return {"train_hist": h, "gamma": np.float64(gamma), "alpha": np.array(alpha), "intercept": np.array(bias)}


def _chi2_scores(model, h, num_classes):
  dec = np.exp(-float(model["gamma"]) * chi2_distance(h, model["train_hist"])) @ model["alpha"].T + model["intercept"]
  return np.concatenate([-dec, dec], 1) if num_classes == 2 else dec


def fit(root, files, labels, num_classes, config, seed, log=print):
  """Vocabulary + SVM on the train split. Returns (model arrays dict, train histograms)."""
  cfg, size = config.dsift, config.dsift.input_size or config.model.input_size or 224
  descs = all_descriptors(root, files, cfg, size, "dsift: train descriptors")
  pool = np.concatenate(descs)
  rng = np.random.default_rng(seed)
  if len(pool) > cfg.max_descriptors:
    pool = pool[rng.choice(len(pool), cfg.max_descriptors, replace=False)]
  log(f"dsift: {len(descs[0])} descriptors per image at {size} px; k-means ({cfg.vocabulary} words) on {len(pool)}")
  km = cluster.MiniBatchKMeans(cfg.vocabulary, random_state=seed, n_init=3, batch_size=4096).fit(pool)
  centers = km.cluster_centers_.astype(np.float32)
  h = histograms(descs, centers)
  model = {"centers": centers, "size": np.int32(size), "kernel": np.array(cfg.kernel)}
  if cfg.kernel == "linear":
    f, _ = svm.fit(h, labels, num_classes, config.svm, seed)
    model.update(w=f.kernel, b=f.bias, C=np.float64(f.C))
    log(f"dsift: LinearSVC C={f.C:g}" + (f" (inner CV: {f.cv})" if f.cv else ""))
  elif cfg.kernel == "chi2":
    gamma = 1.0 / max(float(chi2_distance(h, h).mean()), 1e-12)
    C = config.svm.C
    if config.svm.select_C:
      grid = [float(c) for c in config.svm.C_grid]
      folds = min(config.svm.cv_folds, int(np.bincount(labels, minlength=num_classes).min()))
      kf = model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed)
      acc = {c: float(np.mean([np.mean(_chi2_scores(_chi2_fit(h[a], labels[a], num_classes, c, gamma, seed), h[b],
                                                      num_classes).argmax(1) == labels[b])
                               for a, b in kf.split(h, labels)])) for c in grid}
      C = max(grid, key=lambda c: acc[c])
      log(f"dsift: chi2 SVC C={C:g} (inner CV: {acc})")
    model.update(_chi2_fit(h, labels, num_classes, C, gamma, seed), C=np.float64(C))
  else:
    raise ValueError(f"dsift.kernel={cfg.kernel!r}; expected 'linear' or 'chi2'")
  return model, h


def scores(model, h, num_classes):
  """Class scores (SVM margins; for two classes (-m, m)) of histograms h."""
  if str(model["kernel"]) == "linear":
    return h @ model["w"] + model["b"]
  return _chi2_scores(model, h, num_classes)


def heldout_scores(h, labels, num_classes, model, config, seed):
  """Cross-validated margins on the train split at the chosen C (vocabulary kept): for calibration."""
  if str(model["kernel"]) == "linear":
    return svm.heldout_margins(h, labels, num_classes, config.svm, float(model["C"]), seed)
  return svm.heldout_scores(len(labels), labels, num_classes, seed, lambda a, b: _chi2_scores(
      _chi2_fit(h[a], labels[a], num_classes, float(model["C"]), float(model["gamma"]), seed), h[b], num_classes))


def save(workdir, model):
  """Writes WORKDIR/dsift_model.npz atomically (a killed process leaves no half-written model)."""
  fileio.savez(os.path.join(workdir, MODEL_FILE), **model)


def load(workdir):
  path = os.path.join(workdir, MODEL_FILE)
  if not fileio.exists(path):
    return None
  with fileio.open(path, "rb") as f:
    z = np.load(f, allow_pickle=False)
    return {k: z[k] for k in z.files}
