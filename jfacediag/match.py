r"""Matching faces against a gallery of diagnosed patients (GestaltMatcher-style), for conditions too rare to train on.

  python -m jfacediag.match --gallery gallery/ --probes new_photos/ --out matches/
  python -m jfacediag.match --gallery gallery/ --eval loo --out loo/ [--tta flip] [--embedders builtin:sface,w/ir50]
  python -m jfacediag.match --gallery gallery/ --pairs condition --out pairs/

The gallery is a folder of conditions (`gallery/<condition>/*.jpg`); probes are photos or folders. Each photo is
aligned the way each embedder expects (its backbone's alignment style: YuNet or MTCNN, then arcface112, facenet160,
vggface224 or paper) and embedded by its feature layer; `--run RUN` (or `run:RUN` in --embedders) uses the
fine-tuned backbone of a finished DTL1 run.
Embeddings are cached per file content (sha256) and embedder in `--cache` (default OUT/cache), so a second run with
a grown gallery embeds only the new photos. `--tta flip` averages the embeddings of each aligned face and its
mirror. With several embedders (`--embedders a,b,c`), each one's cosine similarities are z-normalised by its own
gallery-to-gallery similarities, then averaged (as GestaltMatcher-Arc combines its models).

For each probe, conditions are ranked by the best similarity to one of their gallery cases (nearest case) and by
the similarity to their centroid (the mean of their unit embeddings); OUT/matches.csv and .json list the top
conditions with their nearest cases, and OUT/sheets/<probe>.png shows them. A probe that is itself a gallery
photo (the same file content) is left out of its own matches.

`--eval loo` scores the gallery against itself, leaving each photo out together with every photo of the same person
or the same photo (the leakage guard's clusters: a person never matches themself): top-1/5/10/30 accuracy with exact
binomial intervals, mean rank, per-condition top-k, and the unseen protocol (conditions with at most --rare-max
cases, scored against the full gallery, apart from the frequent ones). `--test DIR` scores a second labelled folder
against the gallery instead. `--pairs condition|identity` gives ROC AUC and TAR at FAR 1e-2 and 1e-3 of
same-condition (or same-person cluster) pairs: how separable the conditions are before anything is trained.

jfacediag is a research tool, not a medical device: a match is not a diagnosis.
"""
import argparse
import csv
import hashlib
import json
import os
import sys
import time

import numpy as np

from jfacediag import base_config, builtin, cli_front, fileio, leakage, metrics, progress
from jfacediag.align import detectors, styles
from jfacediag.data import images

NOT_A_DIAGNOSIS = "jfacediag is a research tool, not a medical device: a match is not a diagnosis."
TOPK = (1, 5, 10, 30)


# == Embedders =========================================================================================================
class _Weights:
  """Converted, builtin or run:RUN weights (a DTL1 run's fine-tuned backbone): features of aligned crops."""

  def __init__(self, spec):
    from jfacediag import embed  # pylint: disable=g-import-not-at-top  (jax and the model load on use)
    self.net = embed.Embedder(spec)
    self.name, self.style = spec, self.net.spec.align_style or "arcface112"
    self.size = styles.SIZES[self.style]
    with open(os.path.join(builtin.resolve(spec), "metadata.json"), encoding="utf-8") as f:
      self.key = hashlib.sha256(f.read().encode()).hexdigest()[:16]

  def __call__(self, crops):
    return self.net(crops)


def make_embedders(embedders, run_dirs):
  out = [_Weights(s) for s in list(embedders) + [f"run:{r}" for r in run_dirs]]
  if not out:
    raise ValueError("no embedder: pass --embedders (e.g. builtin:sface) and/or --run RUN")
  return out


# == Faces and cached embeddings =======================================================================================
class Cache:
  """Embeddings per (embedder, TTA, alignment) and file content: CACHE/<key>.npz, rewritten atomically."""

  def __init__(self, directory, embedder, tta, align):
    key = hashlib.sha256(f"{embedder.key}|{tta}|{align}|{embedder.style}|{embedder.size}".encode()).hexdigest()[:20]
    # `align` names the detector too ("auto/yunet"): another detector gives other crops.
    self.path = os.path.join(directory, f"{key}.npz") if directory else ""
    self.table = {}
    if self.path and os.path.exists(self.path):
      with np.load(self.path) as z:
        self.table = {h: (e if e.size else None) for h, e in zip(z["hashes"].tolist(), z["embeddings"])}
        self.table.update({h: None for h in z["faceless"].tolist()})

  def save(self):
    if not self.path:
      return
    have = {h: e for h, e in self.table.items() if e is not None}
    dim = next(iter(have.values())).shape[0] if have else 1
    fileio.makedirs(os.path.dirname(self.path))
    fileio.savez(self.path, hashes=np.array(list(have), dtype=str),
                 embeddings=np.stack(list(have.values())) if have else np.zeros((0, dim), np.float32),
                 faceless=np.array([h for h, e in self.table.items() if e is None], dtype=str))


class Aligner:
  """Detects each photo once (the largest face) and aligns it in any style; `align="none"` takes crops as they are."""

  def __init__(self, align="auto", detector="yunet", mtcnn_weights=""):
    self.align, self.det, self.detector = align, None, "" if align == "none" else detector
    if align != "none":
      self.det = detectors.make(detector, mtcnn_weights)
    self.faces = {}

  def crop(self, path, style, size):
    img = images.load_rgb(path)
    if self.align == "none":
      return img
    if path not in self.faces:
      self.faces[path] = detectors.largest(self.det.detect(img))
    face = self.faces[path]
    return None if face is None else styles.align(img, face, style if self.align == "auto" else self.align, size)[0]


def file_hashes(files):
  """sha256 per file (None and a reason for an unreadable one): the cache key, computed once per run."""
  hashes, reasons = [], {}
  for f in files:
    try:
      hashes.append(fileio.sha256(f))
    except OSError as e:
      hashes.append(None)
      reasons[f] = f"unreadable: {e.strerror}"
  return hashes, reasons


def embed_files(files, embedder, aligner, tta, cache_dir, show_progress=True, hashes=None):
  """Unit embeddings [n, d] (NaN rows: no face or unreadable) and a reason per failed file; cached by content
  (`hashes`: file_hashes(files), when the caller has them already)."""
  cache = Cache(cache_dir, embedder, tta, f"{aligner.align}/{aligner.detector}")
  hashes, reasons = file_hashes(files) if hashes is None else hashes
  reasons = dict(reasons)
  todo = [(f, h) for f, h in zip(files, hashes) if h is not None and h not in cache.table]
  crops, keys = [], []
  for f, h in progress.bar(todo, desc=f"align for {os.path.basename(embedder.name)}", unit="img",
                           disable=not show_progress, leave=False):
    try:
      c = aligner.crop(f, embedder.style, embedder.size)
    except images.UnreadableImage as e:
      reasons[f] = f"unreadable: {e}"
      continue
    if c is None:
      cache.table[h] = None
      continue
    crops.append(c)
    keys.append(h)
  if crops:
    e = _unit(embedder(crops))
    if tta == "flip":
      e = e + _unit(embedder([np.ascontiguousarray(c[:, ::-1]) for c in crops]))
    for h, v in zip(keys, _unit(e)):
      cache.table[h] = v.astype(np.float32)
  cache.save()
  dim = next((v.shape[0] for v in cache.table.values() if v is not None), 1)
  out = np.full((len(files), dim), np.nan, np.float32)
  for i, (f, h) in enumerate(zip(files, hashes)):
    if h is not None and cache.table.get(h) is not None:
      out[i] = cache.table[h]
    elif f not in reasons:
      reasons[f] = "no face found"
  return out, reasons, len(crops)


def _unit(e):
  return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


# == Similarities and ranking ==========================================================================================
def pair_indices(n, max_pairs=2_000_000, seed=0):
  """(a, b): every distinct pair a < b of n items, or a random max_pairs of them when there are more."""
  if n * (n - 1) // 2 <= max_pairs:
    return np.triu_indices(n, 1)
  rng = np.random.default_rng(seed)
  a, b = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
  keep = a != b
  return np.minimum(a, b)[keep], np.maximum(a, b)[keep]


def pair_cosines(e, a, b, chunk=100_000):
  """Cosines of the unit rows e[a[i]], e[b[i]], in chunks (never an n x n matrix)."""
  return np.concatenate([(e[a[i:i + chunk]] * e[b[i:i + chunk]]).sum(1) for i in range(0, len(a), chunk)] or
                        [np.zeros(0, np.float32)])


def gallery_stats(gallery):
  """(mean, std) of the cosine of distinct gallery pairs (a random subset of large galleries)."""
  if len(gallery) < 2:
    return 0.0, 1.0
  vals = pair_cosines(gallery, *pair_indices(len(gallery)))
  return float(vals.mean()), float(max(vals.std(), 1e-6))


class Ranker:
  """Conditions ranked for probes against a gallery, in probe blocks (a 10,000 x 100,000 comparison never holds
  more than one block of similarities; tools/bench_match.py times it).

  One embedder: cosine similarity. Several: each embedder's cosines z-normalised by the (mean, std) of its own
  gallery pairs, then averaged (GestaltMatcher-Arc). A condition's score is its best gallery case (nearest case);
  its centroid score is the similarity to the mean of its unit embeddings (scaled the same way). Internally the
  gallery is sorted by condition, so each condition's cases are one slice of a similarity row.
  """

  def __init__(self, gallery_embs, labels, conditions):
    labels = np.asarray(labels)
    self.conditions = list(conditions)
    self.order = np.argsort(labels, kind="stable")  # Sorted position -> gallery index.
    self.labels = labels[self.order]
    self.g = [np.asarray(e, np.float32)[self.order] for e in gallery_embs]
    self.stats = [(0.0, 1.0)] if len(self.g) == 1 else [gallery_stats(e) for e in self.g]
    c = len(conditions)
    self.bounds = np.searchsorted(self.labels, np.arange(c + 1))  # Condition j: sorted rows bounds[j]:bounds[j+1].
    self.present = self.bounds[1:] > self.bounds[:-1]
    self.sums = [np.add.reduceat(e, self.bounds[:-1][self.present], axis=0) for e in self.g]
    self.slot = np.cumsum(self.present) - 1  # Condition -> its row in self.sums.

  def _scale(self, cos, k):
    m, s = self.stats[k]
    return (cos - m) / s

  def rank(self, probe_embs, exclude=None):
    """(best [p, c], centroid [p, c], sim [p, g sorted]) for one block of probes (a list of [p, d] unit
    embeddings, one per embedder). `exclude` [p, g] bool (gallery order) masks cases a probe may not match (itself,
    its person, its photo): they count neither as its nearest cases nor in its centroids."""
    ex = None if exclude is None else np.asarray(exclude)[:, self.order]
    sim = self._sorted_similarities(probe_embs)
    if ex is not None:
      sim = np.where(ex, -np.inf, sim)
    best = np.full((len(sim), len(self.conditions)), -np.inf, np.float32)
    best[:, self.present] = np.maximum.reduceat(sim, self.bounds[:-1][self.present], axis=1)
    cent = np.zeros(best.shape, np.float64)
    for k, (pe, g, total) in enumerate(zip(probe_embs, self.g, self.sums)):
      scores = np.full(best.shape, -np.inf)
      scores[:, self.present] = self._scale((pe @ total.T) / np.linalg.norm(total, axis=1), k)
      for i in ([] if ex is None else np.nonzero(ex.any(1))[0]):  # Centroids without the probe's person and photo.
        rows = np.nonzero(ex[i])[0]
        kept = total.copy()
        np.subtract.at(kept, self.slot[self.labels[rows]], g[rows])
        n = np.linalg.norm(kept, axis=1)
        row = np.full(n.shape, -np.inf)
        row[n > 1e-6] = self._scale((kept[n > 1e-6] @ pe[i]) / n[n > 1e-6], k)
        scores[i, self.present] = row
      cent += scores
    return best, cent / len(probe_embs), sim

  def nearest(self, sim_row, condition, k=3):
    """The k gallery cases of `condition` most similar to one probe (a row of rank()'s sim): [(gallery index,
    similarity)]."""
    lo, hi = self.bounds[condition], self.bounds[condition + 1]
    vals = sim_row[lo:hi]
    top = np.argsort(-vals, kind="stable")[:k]
    return [(int(self.order[lo + t]), float(vals[t])) for t in top if np.isfinite(vals[t])]

  def _sorted_similarities(self, probe_embs):
    """[p, g sorted]: cosine for one embedder, the mean of the per-embedder z-scores for several."""
    return np.mean([self._scale(p @ g.T, k) for k, (p, g) in enumerate(zip(probe_embs, self.g))], axis=0)

  def similarities(self, probe_embs):
    """[p, g] combined similarities in gallery order."""
    sim = self._sorted_similarities(probe_embs)
    out = np.empty_like(sim)
    out[:, self.order] = sim
    return out


def combined(probe_embs, gallery_embs):
  """[p, g] similarities of probes to gallery over embedders (cosine for one, mean z-score for several)."""
  return Ranker(gallery_embs, np.zeros(len(gallery_embs[0]), int), ["all"]).similarities(probe_embs)


# == Evaluation ========================================================================================================
def topk_summary(ranks, topk=TOPK):
  """ranks: 1-based rank of the true condition per evaluated probe."""
  ranks = np.asarray(ranks)
  n = len(ranks)
  out = {"probes": n, "mean_rank": float(ranks.mean()) if n else None}
  for k in topk:
    hit = int((ranks <= k).sum())
    out[f"top{k}"] = {"value": hit / n if n else None, "hits": hit, "ci95_exact": metrics.clopper_pearson(hit, n)}
  return out


def evaluate(probe_embs, probe_labels, gallery_embs, gallery_labels, conditions, groups=None, rare_max=5,
             block=256):
  """Ranks of each probe's true condition (by nearest case and by centroid) and their summaries: all probes,
  per condition, and the unseen protocol (conditions with at most rare_max gallery cases vs the rest).
  `groups` = (probe groups [p], gallery groups [g]): a probe never matches a gallery case of its own group (itself,
  its person, its photo); the mask is built one block of probes at a time."""
  ranker = Ranker(gallery_embs, gallery_labels, conditions)
  cases = np.bincount(np.asarray(gallery_labels), minlength=len(conditions))
  rows, skipped = [], 0
  for lo in range(0, len(probe_labels), block):
    best, cent, _ = ranker.rank([e[lo:lo + block] for e in probe_embs],
                                None if groups is None else groups[0][lo:lo + block, None] == groups[1][None, :])
    for k, y in enumerate(probe_labels[lo:lo + block]):
      if not np.isfinite(best[k, y]):  # Every gallery case of its condition excluded: nothing to match.
        skipped += 1
        continue
      rows.append({"probe": lo + k, "condition": conditions[y], "gallery_cases": int(cases[y]),
                   "rank_nearest": int((best[k] > best[k, y]).sum()) + 1,
                   "rank_centroid": int((cent[k] > cent[k, y]).sum()) + 1})
  summary = {}
  for how in ("nearest", "centroid"):
    ranks = [r[f"rank_{how}"] for r in rows]
    rare = [r[f"rank_{how}"] for r in rows if r["gallery_cases"] <= rare_max]
    frequent = [r[f"rank_{how}"] for r in rows if r["gallery_cases"] > rare_max]
    summary[how] = {"all": topk_summary(ranks), f"rare (<= {rare_max} cases)": topk_summary(rare),
                    f"frequent (> {rare_max} cases)": topk_summary(frequent),
                    "per_condition": {c: topk_summary([r[f"rank_{how}"] for r in rows if r["condition"] == c],
                                                      (1, 5)) for c in conditions}}
  return rows, summary, skipped


def pair_verification(embs, groups):
  """ROC AUC and TAR at FAR 1e-2 / 1e-3 of pairs in the same group (condition or person cluster) vs different ones,
  from the (combined) similarities of every pair (a random 20 million of larger galleries)."""
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  a, b = pair_indices(len(groups), max_pairs=20_000_000)
  stats_ = [(0.0, 1.0)] if len(embs) == 1 else [gallery_stats(e) for e in embs]
  s = np.mean([(pair_cosines(e, a, b) - m) / sd for e, (m, sd) in zip(embs, stats_)], axis=0)
  same = np.asarray(groups)[a] == np.asarray(groups)[b]
  if same.all() or not same.any():
    raise ValueError("--pairs needs pairs both within and across groups")
  fpr, tpr, _ = skm.roc_curve(same, s)
  tar = {f"tar_at_far_{far:g}": float(np.interp(far, fpr, tpr)) for far in (1e-2, 1e-3)}
  return {"pairs": len(s), "same_group_pairs": int(same.sum()), "roc_auc": float(skm.roc_auc_score(same, s)),
          **tar}


def identity_groups(files, embedder="builtin:sface", cache_dir="", show_progress=True, conditions=None):
  """{absolute path: group id}: the leakage guard's clusters (same person, same photo, duplicates) over `files`;
  embedder "" = no guard, each file its own group. conditions: the condition of each file, so that same-person
  thresholds are calibrated per condition pair (a condition whose patients look alike does not merge them). The
  guard's result is cached in cache_dir per file set."""
  if not embedder:
    return {os.path.abspath(f): i for i, f in enumerate(files)}
  cfg = base_config.get_config().leakage
  cfg.embedder = embedder
  common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
  rel = [os.path.relpath(os.path.abspath(f), common) for f in files]
  found = leakage.find_pairs_cached(common, rel, cfg, os.path.join(cache_dir, "leakage.json.gz") if cache_dir else "",
                                    show_progress, None if conditions is None else [str(c) for c in conditions])
  group = leakage.groups(rel, found, leakage.GROUP_KINDS["identity"])
  names = {g: i for i, g in enumerate(sorted(set(group.values())))}
  return {os.path.abspath(f): names[group[r]] for f, r in zip(files, rel)}


# == Outputs ===========================================================================================================
def gallery_files(root):
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--gallery {root!r} is not a folder")
  conditions = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
  if len(conditions) < 2:
    raise ValueError(f"--gallery {root} holds {len(conditions)} condition folder(s); it needs at least 2 "
                     "(gallery/<condition>/*.jpg)")
  files, labels = [], []
  for j, c in enumerate(conditions):
    for f in images.expand([os.path.join(root, c)]):
      if f.lower().endswith(images.IMAGE_EXTENSIONS):
        files.append(f)
        labels.append(j)
  return files, np.array(labels, np.int64), conditions


def within_noise(nearest, next_best):
  """Whether a condition's lead over the next one is within the gallery's noise: leaving out its single nearest
  case (one photo more or less in the gallery) would put the next condition level or ahead, i.e. its second-nearest
  case is no more similar than the next condition's nearest. A condition with one case is always within noise."""
  return len(nearest) < 2 or nearest[1][1] <= next_best


def known_condition(path, conditions):
  """The probe's condition when its folder is named after one (test/<condition>/photo.jpg), else ""."""
  parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
  return parent if parent in conditions else ""


def contact_sheet(path, probe_crop, title, rows, side=96, known=""):
  """The probe (with its known condition), then one row per top condition: its nearest gallery faces with their
  similarities; a condition whose lead over the next is within the gallery's noise (within_noise) says so."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  k = max(len(r["faces"]) for r in rows) if rows else 1
  fig, axes = plt.subplots(len(rows) + 1, k, figsize=(1.6 * k + 0.5, 1.75 * (len(rows) + 1)), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  if probe_crop is not None:
    axes[0, 0].imshow(probe_crop)
  axes[0, 0].set_title("probe" + (f" (known: {known})" if known else ""), fontsize=7)
  for i, r in enumerate(rows, 1):
    for j, (crop, sim, name) in enumerate(r["faces"]):
      if crop is not None:
        axes[i, j].imshow(crop)
      head = f"{i}. {r['condition']}" + (" ~ next (noise)" if r.get("tied") else "") + "\n"
      axes[i, j].set_title((head if j == 0 else "\n") + f"{sim:.3f} {name[-14:]}", fontsize=6,
                           color="darkred" if j == 0 and known and r["condition"] == known else "black")
  fig.suptitle(f"{title}\n~: leaving out that condition's nearest case would reorder it with the next\n"
               f"{NOT_A_DIAGNOSIS}", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.match", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--gallery", required=True, help="folder of condition folders: GALLERY/<condition>/*.jpg")
  ap.add_argument("--probes", nargs="*", default=(), help="photos or folders to match")
  ap.add_argument("--embedders", default="builtin:sface", help="comma-separated weights (builtin:sface, converted "
                                                               "directories, run:RUN for a DTL1 run's backbone); "
                                                               "'' with --run for the run alone")
  ap.add_argument("--run", nargs="*", default=(), help="finished runs whose feature layer embeds too")
  ap.add_argument("--tta", default="none", choices=("none", "flip"))
  ap.add_argument("--align", default="auto", help="auto (each embedder's style), none (crops as given) or a style")
  ap.add_argument("--detector", default="yunet", choices=("yunet", "mtcnn"))
  ap.add_argument("--mtcnn-weights", default="")
  ap.add_argument("--out", required=True, help="output folder")
  ap.add_argument("--cache", default="", help="embedding cache folder (default OUT/cache; 'none' = no cache)")
  ap.add_argument("--top", type=int, default=5, help="conditions listed per probe")
  ap.add_argument("--eval", default="", choices=("", "loo"), help="loo: leave-one-out over the gallery")
  ap.add_argument("--test", default="", help="a labelled folder (TEST/<condition>/*) scored against the gallery")
  ap.add_argument("--rare-max", type=int, default=5, help="the unseen protocol's rare conditions: at most this many "
                                                         "gallery cases")
  ap.add_argument("--identity-guard", default="builtin:sface",
                  help="embedder of the same-person guard ('' = off: only the photo itself is left out)")
  ap.add_argument("--pairs", default="", choices=("", "condition", "identity"))
  ap.add_argument("--sheets", type=int, default=50, help="contact sheets for at most this many probes")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def run(args):
  t0 = time.time()
  os.makedirs(args.out, exist_ok=True)
  cache_dir = "" if args.cache == "none" else (args.cache or os.path.join(args.out, "cache"))
  if args.align not in ("auto", "none") and args.align not in styles.STYLES:
    raise ValueError(f"--align {args.align!r}; expected auto, none or one of {', '.join(styles.STYLES)}")
  g_files, g_labels, conditions = gallery_files(args.gallery)
  embedders = make_embedders([s for s in args.embedders.split(",") if s.strip()], args.run)
  aligner = Aligner(args.align, args.detector, args.mtcnn_weights)
  print(f"Gallery {args.gallery}: {len(g_files)} photos of {len(conditions)} conditions; embedders "
        f"{', '.join(e.name for e in embedders)}{' with flip TTA' if args.tta == 'flip' else ''}.", flush=True)

  def embed_all(files):
    embs, bad, hashes = [], {}, file_hashes(files)
    for e in embedders:
      emb, reasons, new = embed_files(files, e, aligner, args.tta, cache_dir, hashes=hashes)
      embs.append(emb)
      bad.update(reasons)
      print(f"  {os.path.basename(e.name)}: {new} photo(s) embedded, {len(files) - new - len(reasons)} from the "
            f"cache, {len(reasons)} without a usable face", flush=True)
    ok = ~np.any([np.isnan(e[:, 0]) for e in embs], axis=0)
    return [e[ok] for e in embs], ok, bad, [h for h, k in zip(hashes[0], ok) if k]

  g_embs, g_ok, g_bad, g_hash = embed_all(g_files)
  g_files, g_labels = [f for f, k in zip(g_files, g_ok) if k], g_labels[g_ok]
  result = {"gallery": os.path.abspath(args.gallery), "conditions": conditions,
            "cases": {c: int((g_labels == j).sum()) for j, c in enumerate(conditions)},
            "embedders": [e.name for e in embedders], "tta": args.tta, "left_out": g_bad, "note": NOT_A_DIAGNOSIS}

  if args.pairs:
    groups = g_labels
    if args.pairs == "identity":
      person = identity_groups(g_files, args.identity_guard or "builtin:sface", cache_dir,
                               conditions=[conditions[y] for y in g_labels])
      groups = np.array([person[os.path.abspath(f)] for f in g_files])
    result["pairs"] = {args.pairs: pair_verification(g_embs, groups)}
    v = result["pairs"][args.pairs]
    print(f"Pairs by {args.pairs}: {v['pairs']:,} pairs ({v['same_group_pairs']:,} within a group): ROC AUC "
          f"{v['roc_auc']:.3f}, TAR {v['tar_at_far_0.01']:.3f} at FAR 1e-2, {v['tar_at_far_0.001']:.3f} at 1e-3.")

  if args.eval == "loo" or args.test:
    if args.test:
      t_files, t_labels, t_conditions = gallery_files(args.test)
      unknown = set(t_conditions) - set(conditions)
      if unknown:
        raise ValueError(f"--test holds conditions the gallery lacks: {sorted(unknown)}")
      t_labels = np.array([conditions.index(t_conditions[y]) for y in t_labels])
      p_embs, p_ok, _, _ = embed_all(t_files)
      p_files, p_labels = [f for f, k in zip(t_files, p_ok) if k], t_labels[p_ok]
    else:
      p_embs, p_files, p_labels = g_embs, g_files, g_labels
    person = identity_groups(g_files + (p_files if args.test else []), args.identity_guard, cache_dir,
                             conditions=[conditions[y] for y in g_labels] + ([conditions[y] for y in p_labels]
                                                                           if args.test else []))
    pg = np.array([person[os.path.abspath(f)] for f in p_files])
    gg = np.array([person[os.path.abspath(f)] for f in g_files])
    rows, summary, skipped = evaluate(p_embs, p_labels, g_embs, g_labels, conditions, (pg, gg), args.rare_max)
    per_group = np.bincount(gg, minlength=len(set(person.values())))
    result["evaluation"] = {"protocol": "leave-one-out" if not args.test else f"test folder {args.test}",
                            "excluded_per_probe": float(per_group[pg].mean()), "unrankable": skipped,
                            "summary": summary}
    with open(os.path.join(args.out, "ranks.csv"), "w", newline="", encoding="utf-8") as f:
      w = csv.DictWriter(f, ["probe", "condition", "rank_nearest", "rank_centroid", "gallery_cases"])
      w.writeheader()
      w.writerows([{**r, "probe": p_files[r["probe"]]} for r in rows])
    s = summary["nearest"]["all"]
    print(f"{result['evaluation']['protocol']}: {s['probes']} probes ({skipped} without a gallery case of their "
          f"condition left); by nearest case top-1 {_pct(s['top1'])}, top-5 {_pct(s['top5'])}, mean rank "
          f"{s['mean_rank']:.2f}; by centroid top-1 {_pct(summary['centroid']['all']['top1'])}.", flush=True)

  if args.probes:
    probe_files = [f for f in images.expand(list(args.probes)) if f.lower().endswith(images.IMAGE_EXTENSIONS)]
    p_embs, p_ok, p_bad, p_hash = embed_all(probe_files)
    ok_files = [f for f, k in zip(probe_files, p_ok) if k]
    ranker = Ranker(g_embs, g_labels, conditions)
    # A probe that is itself a gallery photo (the same file content) would match itself: that case is left out.
    g_hash, p_hash = np.array(g_hash), np.array(p_hash)
    for i in np.nonzero(np.isin(p_hash, g_hash))[0]:
      print(f"  {ok_files[i]} is gallery photo {g_files[int(np.argmax(g_hash == p_hash[i]))]}: left out of its own "
            "matches")
    matches, sheet_dir = [], os.path.join(args.out, "sheets")
    os.makedirs(sheet_dir, exist_ok=True)
    with open(os.path.join(args.out, "matches.csv"), "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(["probe", "rank", "condition", "best_similarity", "centroid_similarity", "centroid_rank",
                  "within_noise_of_next", "nearest_cases"])
      for lo in range(0, len(ok_files), 256):
        same_file = p_hash[lo:lo + 256, None] == g_hash[None, :]
        best, cent, sim = ranker.rank([e[lo:lo + 256] for e in p_embs], same_file)
        for k, pf in enumerate(ok_files[lo:lo + 256]):
          order = np.argsort(-best[k], kind="stable")
          c_rank = {int(c): r + 1 for r, c in enumerate(np.argsort(-cent[k], kind="stable"))}
          top = []
          for r, j in enumerate(order[:args.top]):
            if not np.isfinite(best[k, j]):  # A condition with no case left (its only case is the probe).
              break
            near = [(g_files[n], s_) for n, s_ in ranker.nearest(sim[k], j)]
            nxt = order[r + 1] if r + 1 < len(order) else None
            top.append({"condition": conditions[j], "best_similarity": float(best[k, j]),
                        "centroid_similarity": float(cent[k, j]), "centroid_rank": c_rank[int(j)],
                        "nearest_cases": near,
                        "within_noise_of_next": bool(nxt is not None and np.isfinite(best[k, nxt])
                                                     and within_noise(near, float(best[k, nxt])))})
            w.writerow([pf, r + 1, conditions[j], f"{best[k, j]:.4f}", f"{cent[k, j]:.4f}", c_rank[int(j)],
                        int(top[-1]["within_noise_of_next"]),
                        " ".join(f"{os.path.relpath(g, args.gallery)}:{s_:.3f}" for g, s_ in near)])
          matches.append({"probe": pf, "known_condition": known_condition(pf, conditions), "top": top,
                          "same_file_in_gallery": [g_files[n] for n in np.nonzero(same_file[k])[0]]})
    e0 = embedders[0]
    for i, m in enumerate(matches[:args.sheets]):
      sheet_rows = [{"condition": t["condition"], "tied": t["within_noise_of_next"],
                     "faces": [(aligner.crop(g, e0.style, e0.size), s_, os.path.basename(g))
                               for g, s_ in t["nearest_cases"]]} for t in m["top"]]
      contact_sheet(os.path.join(sheet_dir, f"{i:04d}_{os.path.splitext(os.path.basename(m['probe']))[0]}.png"),
                    aligner.crop(m["probe"], e0.style, e0.size), f"{os.path.basename(m['probe'])} vs {args.gallery}"
                    + (" (scores: mean z-score over embedders)" if len(embedders) > 1 else " (cosine)"), sheet_rows,
                    known=m["known_condition"])
    result.update(matches=matches, probes_left_out=p_bad)
    for m in matches[:20]:
      print(f"  {m['probe']}" + (f" (known: {m['known_condition']})" if m["known_condition"] else "") + ": "
            + ", ".join(f"{t['condition']} {t['best_similarity']:.3f}" + (" ~" if t["within_noise_of_next"] else "")
                        for t in m["top"][:3]))
    if any(t["within_noise_of_next"] for m in matches for t in m["top"]):
      print("  ~: within noise of the next condition (leaving out this condition's nearest case would reorder them)")
    for f, why in p_bad.items():
      print(f"  {f}: not matched ({why})")

  with open(os.path.join(args.out, "matches.json" if args.probes else "match.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print(f"Wrote {args.out} in {time.time() - t0:.1f}s. {NOT_A_DIAGNOSIS}", flush=True)
  return result


def _pct(m):
  return "n/a" if m["value"] is None else (f"{100 * m['value']:.1f}% [{100 * m['ci95_exact'][0]:.1f}, "
                                           f"{100 * m['ci95_exact'][1]:.1f}]")


def main(argv=None):
  return cli_front.one_line_errors(run, parse(argv))


if __name__ == "__main__":
  sys.exit(main())
