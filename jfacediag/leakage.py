"""The leakage guard: duplicate photos and one person's photos that a split puts on both sides.

Small face sets gathered from publications and forums repeat photos (re-encoded, resized, re-cropped, recoloured,
mirrored) and people. Before a run trains, every pair of usable images is checked, and each pair gets its
strongest kind:
  exact         identical decoded pixels (any container or file name);
  near          perceptual hash (DCT pHash, 64 bits) within leakage.max_hamming bits and pixel correlation of
                32x32 grey thumbnails >= leakage.min_correlation, the mirror included: re-encoded, resized or
                slightly recoloured copies of the whole image;
  same_photo    one photo under another crop, scale, colour or mirror: face embeddings at cosine >=
                leakage.same_photo_min_cosine and SIFT keypoints of the two aligned faces that one similarity
                transform maps onto each other (>= leakage.same_photo_inliers RANSAC inliers, mirror included).
                Different photos of one person, and different people, give a few inliers at most (measured: README);
  same_person   face embeddings (leakage.embedder) at cosine >= the identity threshold: different photos of one
                person. The threshold holds a stated false-match rate on the data set's own similarity
                distribution (`calibrate`): an adult verification threshold links most children of one age group.
Faces are YuNet-detected and aligned arcface112, except in a folder written by jfacediag.align in a template style
(arcface112, paper), whose crops are used as they are; its centre-crop fallbacks count as photos without a face.

`data.group_by` = "duplicates" keeps exact, near and same_photo clusters on one side of the split, "identity" also
same-person clusters. Same-person clusters are average-linkage clusters cut at the threshold, so a chain of
pairs A~B~C does not merge A with C unless the group's average similarity holds: no transitive chaining.

Outputs (WORKDIR): leakage.json (counts per kind, thresholds, the similarity histogram, the top pairs across the
split), leakage_pairs.csv.gz (every pair, with its splits), leakage_pairs.png (a contact sheet of the top pairs).
"""
import csv
import gzip
import hashlib
import io
import json
import os

import cv2
import numpy as np
from PIL import Image
from scipy import fft, stats
from scipy.cluster import hierarchy

from jfacediag import fileio, models, progress
from jfacediag.align import detectors, styles
from jfacediag.data import aligned_folder, images

KINDS = ("exact", "near", "same_photo", "same_person")  # Strongest first.
GROUP_KINDS = {"duplicates": ("exact", "near", "same_photo"), "identity": KINDS}
MIN_CALIBRATION_PAIRS = 300  # Fewer pairs (about 25 faces) estimate the tail too poorly: the embedder's threshold.
LEAKAGE_FILE = "leakage.json"
PAIRS_FILE = "leakage_pairs.csv.gz"
SHEET_FILE = "leakage_pairs.png"
HIST_EDGES = np.round(np.arange(-0.2, 1.0001, 0.1), 1)


# == Image hashes ======================================================================================================
def phash(rgb):
  """64-bit DCT perceptual hash of an RGB array (grey 32x32, top-left 8x8 DCT coefficients above their median)."""
  grey = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.LANCZOS), np.float64)
  coef = fft.dctn(grey, norm="ortho")[:8, :8].ravel()
  bits = coef > np.median(coef[1:])
  return int(np.packbits(bits).view(">u8")[0])


def thumbnail(rgb):
  """Grey 32x32, zero mean, unit norm: dot products of two thumbnails are their pixel correlation."""
  g = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.LANCZOS), np.float64).ravel()
  g = g - g.mean()
  return g / max(np.linalg.norm(g), 1e-9)


def _duplicate_pairs(root, files, cfg, show_progress):
  exact, ph, phm, th, thm = [], [], [], [], []
  for f in progress.bar(files, desc="leakage: hash images", unit="img", disable=not show_progress, leave=False):
    rgb = images.load_rgb(os.path.join(root, f))
    mirror = np.ascontiguousarray(rgb[:, ::-1])
    exact.append(hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest())
    ph.append(phash(rgb)), phm.append(phash(mirror))
    th.append(thumbnail(rgb)), thm.append(thumbnail(mirror))
  ph, phm = np.array(ph, np.uint64), np.array(phm, np.uint64)
  th, thm = np.array(th, np.float32).reshape(len(files), -1), np.array(thm, np.float32).reshape(len(files), -1)
  ids = np.unique(exact, return_inverse=True)[1]
  pairs = {}
  for lo in range(0, len(files), 1024):  # Row blocks: memory stays O(1024 n) for any folder size.
    hi = min(lo + 1024, len(files))
    dist = np.minimum(np.bitwise_count(ph[lo:hi, None] ^ ph[None, :]), np.bitwise_count(ph[lo:hi, None] ^ phm[None]))
    corr = np.maximum(th[lo:hi] @ th.T, th[lo:hi] @ thm.T)
    same = ids[lo:hi, None] == ids[None, :]
    hit = same | ((dist <= cfg.max_hamming) & (corr >= cfg.min_correlation))
    for i, j in zip(*np.nonzero(hit)):
      i += lo
      if i < j:
        pairs[(i, j)] = ({"kind": "exact", "score": 1.0} if same[i - lo, j] else
                         {"kind": "near", "score": round(float(corr[i - lo, j]), 4), "hamming": int(dist[i - lo, j])})
  return pairs


# == Faces =============================================================================================================
class _Faces:
  """One aligned face per file: crops for the embedder (arcface112) and for the same-photo check (224 px)."""

  def __init__(self, root, files):
    self.root, self.files = root, files
    aligned = aligned_folder.settings(root)
    self.template = bool(aligned) and aligned["style"] in ("arcface112", "paper")
    self.landmarks = {}
    if self.template:
      self.fallback = {r["output"] for r in aligned_folder.read_rows(root, aligned_folder.MANIFEST) if r.get("fallback")}
      self.how = f"the {aligned['style']} crops jfacediag.align wrote (no second detection)"
      self.no_face_reason = "a centre-crop fallback of jfacediag.align: no face was found in the photo"
    else:
      self.det = detectors.make("yunet")
      self.how = "YuNet detection, arcface112 alignment"
      self.no_face_reason = "YuNet found no face"

  def crop(self, i, size):
    """The face of file i at `size` (112: the embedder's crop; 224: the same-photo check's), None if faceless."""
    f = self.files[i]
    if self.template:
      if f in self.fallback:
        return None
      img = images.load_rgb(os.path.join(self.root, f))
      return img if img.shape[:2] == (size, size) else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = images.load_rgb(os.path.join(self.root, f))
    if i not in self.landmarks:
      face = detectors.largest(self.det.detect(img))
      self.landmarks[i] = face.landmarks if face else None
    if self.landmarks[i] is None:
      return None
    face = detectors.Face(np.zeros(4, np.float32), 0.0, self.landmarks[i])
    return styles.align(img, face, "arcface112" if size == 112 else "paper", size)[0]


def _embeddings(faces, embedder, show_progress):
  """(unit embeddings [n, d] with NaN rows for faceless files, arch name)."""
  from jfacediag import embed  # pylint: disable=g-import-not-at-top  (jax and the model, only when checking identity)
  net = embed.Embedder(embedder)
  n = len(faces.files)
  emb = np.full((n, net.spec.feature_dim), np.nan, np.float32)
  for lo in progress.bar(range(0, n, 256), desc="leakage: align + embed", unit="x256 img", disable=not show_progress,
                 leave=False):
    crops = {i: faces.crop(i, 112) for i in range(lo, min(lo + 256, n))}
    have = [i for i, c in crops.items() if c is not None]
    if have:
      e = net([crops[i] for i in have])
      emb[have] = e / np.linalg.norm(e, axis=1, keepdims=True)
  return emb, net.spec.name


def calibrate(sample, rate, model_threshold=None):
  """The identity threshold for a data set: its impostor similarities (`sample`, cosines of random pairs: nearly
  all are different people) fitted by a normal distribution through their median and MAD, which the few
  same-person pairs barely move; the threshold is the cosine above which a fraction `rate` of impostor pairs lies,
  or the embedder's own verification threshold when that is higher."""
  sample = np.asarray(sample, np.float64)
  fit = {"false_match_rate": rate, "model_threshold": model_threshold, "pairs_sampled": int(len(sample))}
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


_SIFT = []


def _sift(crop):
  if not _SIFT:
    _SIFT.append(cv2.SIFT_create())
  grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
  out = []
  for g in (grey, np.ascontiguousarray(grey[:, ::-1])):
    kp, desc = _SIFT[0].detectAndCompute(g, None)
    out.append((np.float32([k.pt for k in kp]).reshape(-1, 2), desc))
  return out


def sift_inliers(a, b):
  """RANSAC inliers of one similarity transform between the SIFT keypoints of two 224 px aligned faces (`_sift`
  outputs), the second also mirrored: tens to hundreds for one photo re-cropped, rescaled or recoloured, a handful
  for different photos."""
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


def identity_clusters(files, emb, same_person, threshold):
  """Average-linkage clusters, cut at `threshold`, inside each connected set of same-person pairs: {file: id}."""
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
    dist = np.clip(1.0 - emb[members] @ emb[members].T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    labels = hierarchy.fcluster(hierarchy.linkage(dist[np.triu_indices(len(members), 1)], "average"),
                                1.0 - threshold, "distance")
    for i, label in zip(members, labels):
      out[files[i]] = next_id + int(label)
    next_id += int(labels.max()) + 1
  return out


def _pair_blocks(unit, rows=1024):
  """(first row, cosines of those rows against all, mask of each pair once) over row blocks: O(rows * n) memory."""
  n = len(unit)
  for lo in range(0, n, rows):
    block = unit[lo:lo + rows] @ unit.T
    yield lo, block, np.arange(n)[None, :] > np.arange(lo, lo + block.shape[0])[:, None]


def find_pairs(root, files, cfg, show_progress=True):
  """Every duplicate, same-photo and same-person pair among `files` (relative to root). cfg = config.leakage."""
  files = list(files)
  pairs = _duplicate_pairs(root, files, cfg, show_progress)
  out = {"files": len(files), "settings": {k: cfg[k] for k in ("max_hamming", "min_correlation", "embedder",
                                                                 "threshold", "false_match_rate",
                                                                 "same_photo_min_cosine", "same_photo_inliers")},
         "identity": None, "no_face": [], "identity_clusters": {}}
  if cfg.embedder and len(files) > 1:
    if show_progress:
      print(f"leakage: aligning and embedding {len(files)} images with {cfg.embedder}", flush=True)
    faces = _Faces(root, files)
    emb, arch = _embeddings(faces, cfg.embedder, show_progress)
    have = np.nonzero(~np.isnan(emb[:, 0]))[0]
    unit, m = emb[have], len(have)
    total = m * (m - 1) // 2
    model = models.verification_threshold(arch)
    # Pass 1: the histogram, the count above the adult threshold, and up to 2M pair cosines for the calibration
    # (a random subset of larger sets: the fit needs the bulk of the distribution, not every pair).
    rng, keep = np.random.default_rng(0), min(1.0, 2_000_000 / max(total, 1))
    hist, above_model, sample = np.zeros(len(HIST_EDGES) - 1, np.int64), 0, []
    for _, block, upper in _pair_blocks(unit):
      vals = block[upper]
      hist += np.histogram(np.clip(vals, HIST_EDGES[0], HIST_EDGES[-1]), HIST_EDGES)[0]
      above_model += int((vals >= model).sum()) if model is not None else 0
      sample.append(vals if keep == 1.0 else vals[rng.random(len(vals)) < keep])
    sample = np.concatenate(sample) if sample else np.zeros(0, np.float32)
    if cfg.threshold:
      ident = {"threshold": float(cfg.threshold), "source": "leakage.threshold", "model_threshold": model,
               "false_match_rate": None, "median": float(np.median(sample)) if len(sample) else None}
    else:
      ident = calibrate(sample, cfg.false_match_rate, model)
    threshold = ident["threshold"]
    # Pass 2: the candidate pairs, at or above the lower of the identity and same-photo thresholds.
    lowest, candidates, sims = min(threshold, cfg.same_photo_min_cosine), [], {}
    for lo, block, upper in _pair_blocks(unit):
      for r, c in zip(*np.nonzero(upper & (block >= lowest))):
        i, j = int(have[lo + r]), int(have[c])
        candidates.append((min(i, j), max(i, j)))
        sims[candidates[-1]] = float(block[r, c])
    inliers, descriptors = {}, {}
    todo = [p for p in candidates if sims[p] >= cfg.same_photo_min_cosine and p not in pairs]
    for i, j in progress.bar(todo, desc="leakage: same-photo check", unit="pair", disable=not show_progress,
                             leave=False):
      for k in (i, j):
        if k not in descriptors:
          descriptors[k] = _sift(faces.crop(k, 224))
      inliers[(i, j)] = sift_inliers(descriptors[i], descriptors[j])
    same_person = []
    for p in candidates:
      if p in pairs:
        continue
      if inliers.get(p, 0) >= cfg.same_photo_inliers:
        pairs[p] = {"kind": "same_photo", "score": round(sims[p], 4), "inliers": inliers[p]}
      elif sims[p] >= threshold:
        pairs[p] = {"kind": "same_person", "score": round(sims[p], 4)}
        same_person.append(p)
    ident.update(embedder=cfg.embedder, arch=arch, faces=faces.how, faces_compared=m, pairs_compared=total,
                 expected_false_pairs=(round(total * ident["false_match_rate"], 1) if ident.get("fitted") is not None
                                       and ident["fitted"] >= ident["threshold"] else None),
                 above_model_threshold=above_model if model is not None else None,
                 histogram={"edges": HIST_EDGES.tolist(), "counts": hist.tolist()},
                 same_photo_checked=len(todo))
    out.update(identity=ident, no_face=[files[i] for i in range(len(files)) if np.isnan(emb[i, 0])],
               no_face_reason=faces.no_face_reason,
               identity_clusters=identity_clusters(files, emb, same_person, threshold))
  out["pairs"] = [{"a": files[i], "b": files[j], **v} for (i, j), v in sorted(pairs.items())]
  return out


# == Cache, groups, splits =============================================================================================
def fingerprint(root, files, cfg):
  settings = [cfg.max_hamming, cfg.min_correlation, cfg.embedder, cfg.threshold, cfg.false_match_rate,
              cfg.same_photo_min_cosine, cfg.same_photo_inliers, 2]  # 2: the version of what find_pairs returns.
  h = hashlib.sha256(json.dumps(settings).encode())
  for f in files:
    st = os.stat(os.path.join(root, f))
    h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def find_pairs_cached(root, files, cfg, cache_path, show_progress=True):
  """find_pairs, reusing `cache_path` (gzip-compressed JSON) when it holds the result for the same files and
  settings."""
  key = fingerprint(root, files, cfg)
  if cache_path and fileio.exists(cache_path):
    try:
      with fileio.open(cache_path, "rb") as f:
        cached = json.loads(gzip.decompress(f.read()))
    except (OSError, ValueError):
      cached = {}  # Another format (an older release) or a torn file: computed again.
    if cached.get("fingerprint") == key:
      return cached
  found = {**find_pairs(root, files, cfg, show_progress), "fingerprint": key}
  if cache_path:
    fileio.makedirs(os.path.dirname(cache_path))
    with fileio.open(cache_path + ".tmp", "wb") as f:
      f.write(gzip.compress(json.dumps(found).encode()))
    fileio.replace(cache_path + ".tmp", cache_path)
  return found


def groups(files, found, kinds):
  """{file: group id}, singletons included: connected clusters of the duplicate kinds in `kinds`, joined with the
  average-linkage identity clusters when `kinds` holds same_person."""
  parent = {f: f for f in files}

  def root(f):
    while parent[f] != f:
      parent[f] = parent[parent[f]]
      f = parent[f]
    return f

  for p in found["pairs"]:
    if p["kind"] in kinds and p["kind"] != "same_person" and p["a"] in parent and p["b"] in parent:
      parent[root(p["a"])] = root(p["b"])
  if "same_person" in kinds:
    first = {}
    for f, c in found.get("identity_clusters", {}).items():
      if f in parent:
        if c in first:
          parent[root(f)] = root(first[c])
        else:
          first[c] = f
  ids = {}
  return {f: ids.setdefault(root(f), len(ids)) for f in files}


def cross_split(pairs, split_of):
  """Pairs whose images lie in two different splits (of train, val, test, holdout), with the splits."""
  out = []
  for p in pairs:
    sa, sb = split_of.get(p["a"]), split_of.get(p["b"])
    if sa and sb and sa != sb and {sa, sb} <= {"train", "val", "test", "holdout"}:
      out.append({**p, "split_a": sa, "split_b": sb})
  return out


def _top(pairs, n):
  """The n most alarming pairs: by kind (exact first), then by score."""
  return sorted(pairs, key=lambda p: (KINDS.index(p["kind"]), -p["score"]))[:n]


def summarise(found, split_of, group_by, top=20):
  """The small result a run keeps (leakage.json, metrics.json, the report): counts, thresholds, the histogram and
  the top pairs, never the full list."""
  cross = cross_split(found["pairs"], split_of)
  count = lambda ps: {k: sum(p["kind"] == k for p in ps) for k in KINDS}  # noqa: E731
  return {"files": found["files"], "settings": found["settings"], "identity": found["identity"],
          "no_face": len(found["no_face"]), "no_face_examples": found["no_face"][:10],
          "no_face_reason": found.get("no_face_reason", ""), "group_by": group_by,
          "pairs": count(found["pairs"]), "cross_split": count(cross), "top_cross_split": _top(cross, top),
          "top_pairs": _top(found["pairs"], top), "pairs_file": PAIRS_FILE, "sheet_file": SHEET_FILE}


def upgrade(leak):
  """A leakage.json read back on resume; one from an older release (lists of every pair) is summarised."""
  if not isinstance(leak.get("cross_split"), list):
    return leak
  count = lambda ps: {k: sum(p.get("kind") == k for p in ps) for k in KINDS}  # noqa: E731
  return {"files": leak.get("files", 0), "settings": {}, "identity": None, "no_face": len(leak.get("no_face", [])),
          "no_face_examples": leak.get("no_face", [])[:10], "no_face_reason": "", "group_by": leak.get("group_by", ""),
          "pairs": count(leak.get("pairs", [])), "cross_split": count(leak["cross_split"]),
          "top_cross_split": _top(leak["cross_split"], 20), "top_pairs": _top(leak.get("pairs", []), 20),
          "pairs_file": LEAKAGE_FILE, "sheet_file": "(none: written by an older release)"}


def write(workdir, found, leak, root, split_of):
  """WORKDIR/leakage.json (the summary), leakage_pairs.csv.gz (every pair) and leakage_pairs.png (top pairs)."""
  with fileio.open(os.path.join(workdir, LEAKAGE_FILE), "w") as f:
    json.dump(leak, f, indent=1)
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["a", "b", "kind", "score", "hamming", "inliers", "split_a", "split_b"])
  for p in _top(found["pairs"], len(found["pairs"])):
    w.writerow([p["a"], p["b"], p["kind"], p["score"], p.get("hamming", ""), p.get("inliers", ""),
                split_of.get(p["a"], ""), split_of.get(p["b"], "")])
  with fileio.open(os.path.join(workdir, PAIRS_FILE), "wb") as f:
    f.write(gzip.compress(buf.getvalue().encode()))
  shown = leak["top_cross_split"] or leak["top_pairs"]
  if shown:
    embedder = (leak.get("identity") or {}).get("embedder", "no identity check")
    contact_sheet(root, shown, os.path.join(workdir, SHEET_FILE),
                  ("across the split" if leak["top_cross_split"] else "all in one split")
                  + f" ({os.path.basename(workdir.rstrip('/'))}: {os.path.basename(root.rstrip('/'))}, {embedder})")


def contact_sheet(root, pairs, path, what, side=112):
  """One row per pair: both images (letterboxed squares), kind, score and splits."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  def square(f):
    try:
      img = images.load_rgb(os.path.join(root, f))
    except images.UnreadableImage:
      return np.zeros((side, side, 3), np.uint8)
    s = side / max(img.shape[:2])
    img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA)
    out = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out

  cols = 2
  rows = -(-len(pairs) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols / 2, 2.1 * rows), squeeze=False)
  for ax, p in zip(axes.ravel(), pairs):
    ax.imshow(np.concatenate([square(p["a"]), np.full((side, 6, 3), 255, np.uint8), square(p["b"])], 1))
    extra = f", {p['inliers']} inliers" if "inliers" in p else ""
    where = f"\n{p['split_a']} / {p['split_b']}" if "split_a" in p else ""
    name = lambda f: f[-28:].encode("ascii", "replace").decode()  # noqa: E731  (the plot font has no CJK glyphs)
    ax.set_title(f"{p['kind']} {p['score']:.3f}{extra}{where}\n{name(p['a'])}\n{name(p['b'])}", fontsize=6)
    ax.axis("off")
  for ax in axes.ravel()[len(pairs):]:
    ax.axis("off")
  fig.suptitle(f"Leakage guard: top {len(pairs)} pairs {what}", fontsize=9)
  fig.tight_layout()
  fileio.makedirs(os.path.dirname(path))
  with fileio.open(path, "wb") as f:
    fig.savefig(f, dpi=110, format="png")
  plt.close(fig)


# == What the log and the report say ===================================================================================
def _histogram_line(ident):
  h = ident["histogram"]
  parts = [f"{lo:+.1f}..{hi:+.1f}: {n:,}" for lo, hi, n in zip(h["edges"], h["edges"][1:], h["counts"]) if n]
  return "cosine of face pairs: " + " | ".join(parts)


def summary_lines(leak, top=10):
  """Human-readable lines for the log and report.md: counts, thresholds, histogram, the top pairs."""
  if not leak:
    return ["Not checked (leakage.check = False)."]
  n, c, x = leak["files"], leak["pairs"], leak["cross_split"]
  kinds = ", ".join(f"{c[k]} {k.replace('_', '-')}" for k in KINDS)
  lines = [f"{n} images checked: {kinds} pair(s); across the split: "
           + ", ".join(f"{x[k]} {k.replace('_', '-')}" for k in KINDS)
           + (f"; data.group_by={leak['group_by']!r} kept its clusters on one side." if leak.get("group_by") else
              (". Set data.group_by=identity (or duplicates) to keep each cluster on one side."
               if sum(x.values()) else "."))]
  ident = leak.get("identity")
  if ident:
    lines.append(f"  identity threshold {ident['threshold']:.3f} ({ident['source']}); {ident['faces_compared']} "
                 f"faces, {ident['pairs_compared']:,} pairs ({ident['faces']})"
                 + (f"; expected false same-person pairs at that rate: {ident['expected_false_pairs']:g}"
                    if ident.get("expected_false_pairs") is not None else "")
                 + (f"; the adult threshold {ident['model_threshold']} would flag {ident['above_model_threshold']:,} "
                    f"pairs ({100 * ident['above_model_threshold'] / max(1, ident['pairs_compared']):.1f}%)"
                    if ident.get("above_model_threshold") is not None and ident["threshold"] != ident["model_threshold"]
                    else "") + ".")
    lines.append("  " + _histogram_line(ident))
    if leak["no_face"]:
      lines.append(f"  {leak['no_face']} image(s) not compared by identity: {leak['no_face_reason']} (e.g. "
                   f"{', '.join(leak['no_face_examples'][:3])}).")
  else:
    lines.append("  No identity check (leakage.embedder is empty): duplicates only.")
  shown = leak["top_cross_split"][:top]
  if shown:
    lines.append(f"  Top {len(shown)} of {sum(x.values())} pairs across the split (all in {leak['pairs_file']}; "
                 f"contact sheet {leak['sheet_file']}):")
    lines += [f"    {p['kind']}: {p['a']} ({p['split_a']}) ~ {p['b']} ({p['split_b']}), score {p['score']}"
              + (f", {p['inliers']} inliers" if "inliers" in p else "") for p in shown]
  return lines


def report_md(leak, top=10):
  """The report.md section: the summary, the histogram as a table, the top pairs across the split as a table."""
  lines = summary_lines(leak, top=0)
  md = [lines[0], ""] + [line.strip() for line in lines[1:] if not line.strip().startswith("cosine of face pairs")]
  ident = leak.get("identity") if leak else None
  if ident:
    h = ident["histogram"]
    md += ["", "| cosine | " + " | ".join(f"{lo:+.1f}" for lo in h["edges"][:-1]) + " |",
           "|---|" + "---|" * len(h["counts"]), "| face pairs | " + " | ".join(f"{n:,}" for n in h["counts"]) + " |"]
  shown = leak["top_cross_split"][:top] if leak and "top_cross_split" in leak else []
  if shown:
    md += ["", f"Top {len(shown)} of {sum(leak['cross_split'].values())} pairs across the split (every pair: "
           f"`{leak['pairs_file']}` in the workdir; pictures: `{leak['sheet_file']}`):", "",
           "| kind | image | split | image | split | score |", "|---|---|---|---|---|---|"]
    md += [f"| {p['kind']} | `{p['a']}` | {p['split_a']} | `{p['b']}` | {p['split_b']} | {p['score']}"
           + (f" ({p['inliers']} inliers)" if "inliers" in p else "") + " |" for p in shown]
  return md
