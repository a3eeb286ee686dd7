"""The same-photo tier: one photo under another crop, scale, colour or mirror, found as SIFT keypoints of the two
aligned faces that one similarity transform maps onto each other (RANSAC inliers, the mirror included).

Two things make different faces pass such a test, and both are handled here:
- the fill that alignment adds outside the photo (black wedges where the crop is rotated, black borders) has
  corners and edges at the same place in every crop warped by a similar rotation: it is masked out (`fill_mask`);
- every crop is aligned to one template, so the eyes, nose and mouth of different children who share a syndrome's
  features sit on an identity transform of each other: the inlier count needed is calibrated on the data's own
  pairs that cannot be one photo (`calibrate`): the most similar pairs across classes (a labelling error aside,
  two photos of different conditions are different photos) and random pairs within classes too dissimilar to be
  one photo.
Measured on ../shared/data/asd-faces-sample (docs/leakage.md): without the mask the 100 most similar pairs across
the two classes reached 16 and 21 inliers; with it at most 6, while its two pairs of one photo keep about 50.
"""
import math

import cv2
import numpy as np

MIN_NULL_PAIRS = 30  # Fewer pairs that cannot be one photo: the configured count is used as it is.
NULL_CROSS, NULL_WITHIN = 100, 100  # The null sample: most similar pairs across classes, random pairs within them.
TRIMMED_MEAN = 1 - 0.1 * math.log(10) / 0.9  # Mean of an exponential's lower 90%, in units of its mean.
FILL_MARGIN = 8  # Pixels (of the 224 px crop) kept away from the fill: SIFT descriptors see that far.
_SIFT = []


def fill_mask(crop, margin=FILL_MARGIN):
  """uint8 mask (255 = photo) of an aligned crop without the fill: near-black regions touching the crop's border,
  and `margin` pixels around them and around the border."""
  dark = (crop.max(-1) <= 3).astype(np.uint8)
  _, label = cv2.connectedComponents(dark, connectivity=8)
  edge = np.unique(np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]]))
  valid = np.where(np.isin(label, edge[edge > 0]), 0, 255).astype(np.uint8)
  if margin:
    valid = cv2.erode(valid, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
  return valid


def features(crop, mask=True):
  """SIFT keypoints and descriptors of a 224 px aligned face and of its mirror, inside `fill_mask` (mask=False:
  the whole crop, as before the fill was masked)."""
  if not _SIFT:
    _SIFT.append(cv2.SIFT_create())
  grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
  valid = fill_mask(crop) if mask else None
  out = []
  for flip in (False, True):
    g = np.ascontiguousarray(grey[:, ::-1]) if flip else grey
    m = None if valid is None else (np.ascontiguousarray(valid[:, ::-1]) if flip else valid)
    kp, desc = _SIFT[0].detectAndCompute(g, m)
    out.append((np.float32([k.pt for k in kp]).reshape(-1, 2), desc))
  return out


def inliers(a, b):
  """RANSAC inliers of one similarity transform between two faces' `features`, the second also mirrored: tens to
  hundreds for one photo re-cropped, rescaled or recoloured, a handful for different photos."""
  (pa, da), best = a[0], 0
  for pb, db in b:
    if da is None or db is None or len(pa) < 3 or len(pb) < 3:
      continue
    matches = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    if len(good) < 3:
      continue
    _, inl = cv2.estimateAffinePartial2D(pa[[g.queryIdx for g in good]], pb[[g.trainIdx for g in good]],
                                         method=cv2.RANSAC, ransacReprojThreshold=2.0)
    best = max(best, int(inl.sum()) if inl is not None else 0)
  return best


def null_pairs(unit, labels, rng, max_cosine, n_cross=NULL_CROSS, n_within=NULL_WITHIN):
  """Row pairs of `unit` that cannot be one photo: the n_cross most similar pairs across classes (labels: int per
  row; None = unlabelled, then random pairs only), and n_within random pairs within classes (or overall) below
  `max_cosine` (the tier's own cosine floor, under which it never calls a pair one photo: a random pair above it
  may be one photo, and in a small folder of copies many are)."""
  n = len(unit)
  out = set()
  if labels is not None and len(set(labels.tolist())) > 1:
    best = []  # (cosine, i, j) of the best pairs across classes so far.
    for lo in range(0, n, 1024):
      block = unit[lo:lo + 1024] @ unit.T
      block[labels[lo:lo + 1024, None] == labels[None, :]] = -np.inf
      flat = block.ravel()
      k = min(2 * n_cross, flat.size)  # A symmetric block holds each pair twice.
      top = np.argpartition(-flat, k - 1)[:k]
      best += [(float(flat[t]), lo + t // n, t % n) for t in top if np.isfinite(flat[t])]
      best = sorted(best, reverse=True)[:2 * n_cross]  # Each pair twice (i, j) and (j, i) at most.
    out |= {(min(i, j), max(i, j)) for _, i, j in best}
    out = set(sorted(out, key=lambda p: -float(unit[p[0]] @ unit[p[1]]))[:n_cross])
  for _ in range(20 * n_within):
    if len(out) >= n_cross + n_within or n < 2:
      break
    i, j = (int(v) for v in rng.choice(n, 2, replace=False))
    if (labels is None or labels[i] == labels[j] or len(set(labels.tolist())) == 1) and unit[i] @ unit[j] < max_cosine:
      out.add((min(i, j), max(i, j)))
  return sorted(out)


def calibrate(null, rate, floor):
  """The inlier count a same-photo pair needs: the count that pairs which cannot be one photo (`null`) exceed at a
  rate `rate` per pair, from an exponential fit of their tail above its 75th percentile, never below `floor`
  (leakage.same_photo_inliers). The scale is the mean excess of the lower 90% of that tail, divided by 0.744 (what
  an exponential's lower 90% average), so that a few labelling errors among the null (one photo filed under two
  classes: hundreds of inliers) do not raise it."""
  null = np.asarray(null, np.float64)
  fit = {"null_pairs": len(null), "floor": int(floor), "false_match_rate": rate}
  if len(null) < MIN_NULL_PAIRS:
    return {**fit, "inliers": int(floor), "fitted": None, "median": None, "max": None,
            "source": f"leakage.same_photo_inliers ({floor}): {len(null)} pairs that cannot be one photo are too "
                      f"few to calibrate (need {MIN_NULL_PAIRS})"}
  base = float(np.quantile(null, 0.75, method="higher"))
  excess = np.sort(null[null > base] - base)
  kept = excess[:max(1, int(np.ceil(0.9 * len(excess))))]
  scale = max(float(kept.mean()) / TRIMMED_MEAN, 0.5) if len(excess) else 0.5
  fitted = base + scale * math.log(max(len(excess), 1) / len(null) / rate)
  need = max(int(floor), math.ceil(fitted))
  median = float(np.median(null))
  return {**fit, "inliers": need, "fitted": round(fitted, 1), "median": median, "max": int(null.max()),
          "source": (f"{len(null)} pairs that cannot be one photo: median {median:g}, 75th percentile {base:g}, most "
                     f"{int(null.max())} inliers; their fitted tail passes {rate:g} of them at {fitted:.1f}"
                     + (f", below leakage.same_photo_inliers ({floor}), which holds" if fitted < floor else ""))}
