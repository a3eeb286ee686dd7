"""The same-person tier: face embeddings at a cosine above an identity threshold calibrated on the data's own
pairs of different people, per condition pair.

Children who share a syndrome look alike to a face-recognition network: the similarities of different children
*with* the condition centre higher than those of controls or of pairs across conditions, so one pooled threshold
flags many false pairs among the patients and too few among the controls. Each condition pair (within a class,
and across two classes) is therefore calibrated on its own pairs at the same false-match rate per pair
(leakage.identity = "per_class"); a condition pair with too few pairs takes the pooled figure and says so.

`Calibration` holds the thresholds and the table the report prints; `clusters` turns same-person pairs into
average-linkage clusters cut at those thresholds.
"""
import numpy as np
from scipy import stats
from scipy.cluster import hierarchy

MIN_CALIBRATION_PAIRS = 300  # Fewer pairs (about 25 faces) estimate the tail too poorly: the embedder's threshold.
MODES = ("per_class", "pooled", "off")
GESTALT_SIGMA = 0.5  # A class whose different people sit this many sigmas closer than pairs across classes.
SAMPLE_PAIRS = 2_000_000  # Pair cosines kept per calibration (a random subset of larger sets).


def calibrate(sample, rate, model_threshold=None):
  """The identity threshold for a set of pairs: their impostor similarities (`sample`, cosines of pairs that are
  nearly all different people) fitted by a normal distribution through their median and MAD, which the few
  same-person pairs barely move; the threshold is the cosine above which a fraction `rate` of impostor pairs lies,
  or the embedder's own verification threshold when that is higher."""
  sample = np.asarray(sample, np.float64)
  fit = {"false_match_rate": rate, "model_threshold": model_threshold, "pairs_sampled": len(sample)}
  if len(sample) < MIN_CALIBRATION_PAIRS:
    if model_threshold is None:
      raise ValueError(f"{len(sample)} face pairs are too few to calibrate an identity threshold (need "
                       f"{MIN_CALIBRATION_PAIRS}) and the embedder has no known one: set leakage.threshold")
    return {**fit, "threshold": float(model_threshold), "median": None, "sigma": None,
            "source": f"the embedder's ({model_threshold}): {len(sample)} pairs are too few to calibrate"}
  median = float(np.median(sample))
  sigma = float(1.4826 * np.median(np.abs(sample - median)))
  fitted = median + float(stats.norm.isf(rate)) * sigma
  threshold = max(fitted, model_threshold if model_threshold is not None else -1.0)
  source = (f"calibrated: impostor median {median:.3f} + {stats.norm.isf(rate):.2f} sigma ({sigma:.3f}) = "
            f"{fitted:.3f} for a false-match rate of {rate:g} per pair"
            + (f"; the embedder's adult threshold {model_threshold} is higher" if fitted < (model_threshold or -1)
               else ""))
  return {**fit, "threshold": float(threshold), "median": median, "sigma": sigma, "fitted": float(fitted),
          "source": source}


def expected_false(pairs, threshold, median, sigma):
  """Pairs of different people expected above `threshold` under the normal fit (None without a fit)."""
  if median is None or not sigma:
    return None
  return float(pairs * stats.norm.sf((threshold - median) / sigma))


class Calibration:
  """Identity thresholds per condition pair, from the cosines of every pair of faces (fed in blocks to `add`, then
  `fit`). labels: int class per face (all 0 when the data are unlabelled); names: the class names."""

  def __init__(self, labels, names, cfg, model_threshold):
    self.cfg, self.model, self.mode = cfg, model_threshold, cfg.get("identity", "per_class")
    if self.mode not in MODES:
      raise ValueError(f"leakage.identity={self.mode!r}; expected one of {', '.join(map(repr, MODES))}")
    self.names, k = list(names), len(names)
    self.keys = [(a, b) for a in range(k) for b in range(a, k)]
    self.key_of = np.zeros((k, k), np.int32)
    for i, (a, b) in enumerate(self.keys):
      self.key_of[a, b] = self.key_of[b, a] = i
    n = np.bincount(np.asarray(labels, np.int64), minlength=k)
    self.totals = np.array([n[a] * (n[a] - 1) // 2 if a == b else n[a] * n[b] for a, b in self.keys], np.int64)
    self.keep = np.minimum(1.0, SAMPLE_PAIRS / np.maximum(self.totals, 1))
    self.keep_all = min(1.0, SAMPLE_PAIRS / max(int(self.totals.sum()), 1))
    self.rng, self.pooled_sample, self.samples = np.random.default_rng(0), [], [[] for _ in self.keys]

  def keys_of(self, la, lb):
    """Condition-pair index of every pair of a block: faces with labels la (rows) against lb (columns)."""
    return self.key_of[np.asarray(la)[:, None], np.asarray(lb)[None, :]]

  def add(self, key, vals):
    """Cosines `vals` of pairs (each once) with their condition-pair indices `key`."""
    draw = self.rng.random(len(vals))
    self.pooled_sample.append(vals[draw < self.keep_all])
    take = draw < self.keep[key]
    key, vals = key[take], vals[take]
    for k in np.unique(key):
      self.samples[k].append(vals[key == k])

  def fit(self):
    """Sets .pooled (one threshold for every pair), .table (one row per condition pair), .matrix (K x K)."""
    cfg, rate = self.cfg, self.cfg.false_match_rate
    pooled = np.concatenate(self.pooled_sample) if self.pooled_sample else np.zeros(0)
    if cfg.threshold:
      self.pooled = {"threshold": float(cfg.threshold), "source": "leakage.threshold", "model_threshold": self.model,
                     "false_match_rate": None, "median": float(np.median(pooled)) if len(pooled) else None,
                     "sigma": None}
    else:
      self.pooled = calibrate(pooled, rate, self.model)
    samples = [np.concatenate(s) if s else np.zeros(0) for s in self.samples]
    cross = np.concatenate([s for (a, b), s in zip(self.keys, samples) if a != b] or [np.zeros(0)])
    cross_fit = calibrate(cross, rate, None) if len(cross) >= MIN_CALIBRATION_PAIRS else None
    self.table = []
    for (a, b), sample, total in zip(self.keys, samples, self.totals):
      own = calibrate(sample, rate, self.model) if len(sample) >= MIN_CALIBRATION_PAIRS else None
      row = {"a": self.names[a], "b": self.names[b], "pairs": int(total),
             "median": float(np.median(sample)) if len(sample) else None, "sigma": own["sigma"] if own else None}
      if cfg.threshold:
        row.update(threshold=float(cfg.threshold), source="leakage.threshold")
      elif self.mode == "pooled" or own is None:
        row.update(threshold=self.pooled["threshold"], source="pooled" if own else
                   f"pooled: {len(sample)} pairs are too few to calibrate (need {MIN_CALIBRATION_PAIRS})")
      else:
        row.update(threshold=own["threshold"], source="own pairs" + (
            f" (the embedder's {self.model} is higher)" if own["fitted"] < own["threshold"] else ""))
      fit = own or self.pooled
      row["expected_false"] = expected_false(int(total), row["threshold"], fit.get("median"), fit.get("sigma"))
      if a == b and own and cross_fit and cross_fit["sigma"]:
        row["cross_median"] = cross_fit["median"]
        row["shift_sigma"] = round((own["median"] - cross_fit["median"]) / cross_fit["sigma"], 2)
      row["above_own"] = row["above_pooled"] = row["flagged"] = 0
      self.table.append(row)
    k = len(self.names)
    self.flat_key = np.array([a * k + b for a, b in self.keys], np.int64)  # Condition pair -> index into matrix.
    self.matrix = np.full((k, k), np.inf if self.mode == "off" else 0.0)
    if self.mode != "off":
      for (a, b), row in zip(self.keys, self.table):
        self.matrix[a, b] = self.matrix[b, a] = row["threshold"]
    return self

  def count_above(self, key, vals):
    """Adds the pairs at or above their own threshold and above the pooled one to the table's rows."""
    n = len(self.keys)
    own = np.bincount(key[vals >= self.matrix.ravel()[self.flat_key[key]]], minlength=n)
    pooled = np.bincount(key[vals >= self.pooled["threshold"]], minlength=n)
    for row, a, b in zip(self.table, own, pooled):
      row["above_own"] += int(a)
      row["above_pooled"] += int(b)

  def flag(self, la, lb):
    self.table[self.key_of[la, lb]]["flagged"] += 1

  def gestalt(self):
    """Rows of classes whose different people sit GESTALT_SIGMA or more closer than pairs across classes."""
    return [r for r in self.table if r.get("shift_sigma") is not None and r["shift_sigma"] >= GESTALT_SIGMA]


def pair_blocks(unit, rows=256):
  """(first row, cosines of those rows against all, mask of each pair once) over row blocks: O(rows * n) memory."""
  n = len(unit)
  for lo in range(0, n, rows):
    block = unit[lo:lo + rows] @ unit.T
    yield lo, block, np.arange(n)[None, :] > np.arange(lo, lo + block.shape[0])[:, None]


def scan(unit, labels, names, cfg, model_threshold, hist_edges):
  """The fitted Calibration of unit embeddings `unit` (labels: int class per row), with .histogram (pair cosines
  over `hist_edges`) and .above_model (pairs at or above the embedder's own threshold)."""
  cal = Calibration(labels, names, cfg, model_threshold)
  cal.histogram, cal.above_model = np.zeros(len(hist_edges) - 1, np.int64), 0
  for lo, block, upper in pair_blocks(unit):
    vals, key = block[upper], cal.keys_of(labels[lo:lo + len(block)], labels)[upper]
    cal.histogram += np.histogram(np.clip(vals, hist_edges[0], hist_edges[-1]), hist_edges)[0]
    cal.above_model += int((vals >= model_threshold).sum()) if model_threshold is not None else 0
    cal.add(key, vals)
  return cal.fit()


def above(unit, labels, cal, lowest):
  """[(row i, row j, cosine)] of the pairs at or above `lowest`, counting those above their thresholds in `cal`."""
  out = []
  for lo, block, upper in pair_blocks(unit):
    cal.count_above(cal.keys_of(labels[lo:lo + len(block)], labels)[upper], block[upper])
    out += [(lo + int(r), int(c), float(block[r, c])) for r, c in zip(*np.nonzero(upper & (block >= lowest)))]
  return out


def clusters(files, emb, same_person, threshold, labels=None):
  """Average-linkage clusters, cut at the identity threshold, inside each connected set of same-person pairs:
  {file: id}. threshold: one cosine, or a K x K matrix of thresholds per class pair with `labels` (int per file):
  a pair's margin above its own threshold is what is averaged, so classes calibrated apart cluster apart."""
  parent = list(range(len(files)))

  def root(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i
  for i, j in same_person:
    parent[root(i)] = root(j)
  comps = {}
  for i in {k for p in same_person for k in p}:
    comps.setdefault(root(i), []).append(i)
  out, next_id = {}, 0
  for members in comps.values():
    members = sorted(members)
    if np.ndim(threshold):
      lab = np.asarray(labels)[members]
      thr = np.asarray(threshold)[lab[:, None], lab[None, :]]
    else:
      thr = np.full((len(members), len(members)), float(threshold))
    dist = np.clip(2.0 - (emb[members] @ emb[members].T - thr), 0.0, 4.0)  # 2 - margin: <= 2 where s >= threshold.
    np.fill_diagonal(dist, 0.0)
    cut = hierarchy.fcluster(hierarchy.linkage(dist[np.triu_indices(len(members), 1)], "average"), 2.0, "distance")
    for i, label in zip(members, cut):
      out[files[i]] = next_id + int(label)
    next_id += int(cut.max()) + 1
  return out
