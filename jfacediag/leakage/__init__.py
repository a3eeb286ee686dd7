"""The leakage guard: duplicate photos and one person's photos that a split puts on both sides.

Small face sets gathered from publications and forums repeat photos (re-encoded, resized, re-cropped, recoloured,
mirrored) and people. Before a run trains, every pair of usable images is checked, and each pair gets its
strongest kind:
  exact         identical decoded pixels (any container or file name);
  near          perceptual hash (DCT pHash, 64 bits) within leakage.max_hamming bits and pixel correlation of
                32x32 grey thumbnails >= leakage.min_correlation, the mirror included: re-encoded, resized or
                slightly recoloured copies of the whole image (`duplicates`);
  same_photo    one photo under another crop, scale, colour or mirror: face embeddings at cosine >=
                leakage.same_photo_min_cosine and SIFT keypoints of the two aligned faces, outside the fill that
                alignment adds, that one similarity transform maps onto each other, at least as many RANSAC inliers
                as pairs that cannot be one photo reach at the stated rate (`same_photo`);
  same_person   face embeddings (leakage.embedder) at cosine >= the identity threshold of the pair's two classes,
                calibrated on the data's own pairs of that condition pair at a stated false-match rate (`identity`):
                children who share a syndrome look alike, so one pooled threshold is wrong for patients and for
                controls alike. leakage.identity = 'pooled' (one threshold) or 'off' (no same-person pairs).
Faces are YuNet-detected and aligned arcface112, except in a folder written by jfacediag.align in a template style
(arcface112, paper), whose crops are used as they are; its centre-crop fallbacks count as photos without a face.

`data.group_by` = "duplicates" keeps exact, near and same_photo clusters on one side of the split, "identity" also
same-person clusters. Same-person clusters are average-linkage clusters cut at the thresholds, so a chain of
pairs A~B~C does not merge A with C unless the group's average similarity holds: no transitive chaining.

Outputs (WORKDIR, `report`): leakage.json (counts per kind, thresholds per condition pair, the similarity
histogram, the top pairs across the split), leakage_pairs.csv.gz (every pair, with its splits), leakage_pairs.png
(a contact sheet of the top pairs).
"""
import gzip
import hashlib
import json
import os

import numpy as np

from jfacediag import fileio, models, progress
from jfacediag.leakage import duplicates, faces, identity, same_photo
from jfacediag.leakage.identity import MIN_CALIBRATION_PAIRS, calibrate
from jfacediag.leakage.identity import clusters as identity_clusters
from jfacediag.leakage.report import (HIST_EDGES, KINDS, LEAKAGE_FILE, PAIRS_FILE, SHEET_FILE, contact_sheet,
                                      cross_split, most_alarming, report_md, summarise, summary_lines, upgrade, write)

__all__ = ["GROUP_KINDS", "HIST_EDGES", "KINDS", "LEAKAGE_FILE", "MIN_CALIBRATION_PAIRS", "PAIRS_FILE", "SHEET_FILE",
           "calibrate", "contact_sheet", "cross_split", "find_pairs", "find_pairs_cached", "groups",
           "identity_clusters", "report_md", "summarise", "summary_lines", "upgrade", "write"]
GROUP_KINDS = {"duplicates": ("exact", "near", "same_photo"), "identity": KINDS}
SETTINGS = ("max_hamming", "min_correlation", "embedder", "identity", "threshold", "false_match_rate",
            "same_photo_min_cosine", "same_photo_inliers")
VERSION = 3  # Of what find_pairs returns (3: thresholds per condition pair, the same-photo tier's own null).


def find_pairs(root, files, cfg, show_progress=True, classes=None):
  """Every duplicate, same-photo and same-person pair among `files` (relative to root). cfg = config.leakage;
  classes: the class (condition) of each file, for thresholds per condition pair (None: one pooled threshold)."""
  files = list(files)
  pairs = duplicates.find(root, files, cfg, show_progress)
  out = {"files": len(files), "settings": {k: cfg.get(k) for k in SETTINGS}, "identity": None, "same_photo": None,
         "no_face": [], "identity_clusters": {}}
  if cfg.embedder and len(files) > 1:
    if show_progress:
      print(f"leakage: aligning and embedding {len(files)} images with {cfg.embedder}", flush=True)
    face_set = faces.Faces(root, files)
    emb, arch = faces.embeddings(face_set, cfg.embedder, show_progress)
    have = np.nonzero(~np.isnan(emb[:, 0]))[0]
    unit, m = emb[have], len(have)
    names = sorted(set(classes)) if classes is not None else ["all"]
    label_of = np.array([names.index(c) for c in classes] if classes is not None else [0] * len(files), np.int64)
    lab = label_of[have]
    model = models.verification_threshold(arch)
    cal = identity.scan(unit, lab, names, cfg, model, HIST_EDGES)
    # The candidate pairs: at or above the lower of the identity and same-photo thresholds.
    candidates, sims = [], {}
    for r, c, sim in identity.above(unit, lab, cal, min(float(cal.matrix.min()), cfg.same_photo_min_cosine)):
      candidates.append((int(have[r]), int(have[c])))
      sims[candidates[-1]] = sim
    descriptors, inliers = {}, {}

    def count_inliers(i, j):
      for k in (i, j):
        if k not in descriptors:
          descriptors[k] = same_photo.features(face_set.crop(k, 224))
      if (i, j) not in inliers:
        inliers[(i, j)] = same_photo.inliers(descriptors[i], descriptors[j])
      return inliers[(i, j)]
    todo = [p for p in candidates if sims[p] >= cfg.same_photo_min_cosine and p not in pairs]
    for i, j in progress.bar(todo, desc="leakage: same-photo check", unit="pair", disable=not show_progress,
                             leave=False):
      count_inliers(i, j)
    photo = None
    if todo:  # Calibrated on pairs that cannot be one photo, only when there is something to decide.
      null = same_photo.null_pairs(unit, lab if classes is not None else None, np.random.default_rng(0),
                                     cfg.same_photo_min_cosine)
      counts = [count_inliers(int(have[a]), int(have[b])) for a, b in
                progress.bar(null, desc="leakage: same-photo null", unit="pair", disable=not show_progress,
                             leave=False)]
      photo = same_photo.calibrate(counts, cfg.false_match_rate, cfg.same_photo_inliers)
    need = photo["inliers"] if photo else cfg.same_photo_inliers
    same_person = []
    for p in candidates:
      if p in pairs:
        continue
      if inliers.get(p, 0) >= need:
        pairs[p] = {"kind": "same_photo", "score": round(sims[p], 4), "inliers": inliers[p]}
      elif sims[p] >= cal.matrix[label_of[p[0]], label_of[p[1]]]:
        pairs[p] = {"kind": "same_person", "score": round(sims[p], 4)}
        same_person.append(p)
        cal.flag(label_of[p[0]], label_of[p[1]])
    ident, total = dict(cal.pooled), m * (m - 1) // 2
    if cal.mode == "off":
      expected = None
    elif cal.mode == "per_class" and not cfg.threshold and len(cal.table) > 1:
      expected = sum(r["expected_false"] or 0.0 for r in cal.table)
    else:
      expected = identity.expected_false(total, ident["threshold"], ident.get("median"), ident.get("sigma"))
    ident.update(mode=cal.mode, embedder=cfg.embedder, arch=arch, faces=face_set.how, faces_compared=m,
                 pairs_compared=total, per_condition=cal.table if classes is not None else [],
                 gestalt=cal.gestalt() if classes is not None else [],
                 expected_false_pairs=None if expected is None else round(expected, 1),
                 above_model_threshold=cal.above_model if model is not None else None,
                 histogram={"edges": HIST_EDGES.tolist(), "counts": cal.histogram.tolist()})
    out.update(identity=ident, no_face=[files[i] for i in range(len(files)) if np.isnan(emb[i, 0])],
               no_face_reason=face_set.no_face_reason,
               same_photo=(photo or {"inliers": need, "source": "leakage.same_photo_inliers: no candidate pair"})
               | {"min_cosine": cfg.same_photo_min_cosine, "checked": len(todo)},
               identity_clusters=identity_clusters(files, emb, same_person, cal.matrix, label_of))
  out["pairs"] = [{"a": files[i], "b": files[j], **v} for (i, j), v in sorted(pairs.items())]
  if classes is not None:
    across = [p for (i, j), p in zip(sorted(pairs), out["pairs"]) if classes[i] != classes[j]]
    out["across_classes"] = {"counts": {k: sum(p["kind"] == k for p in across) for k in KINDS},
                             "examples": [(p["a"], p["b"]) for p in most_alarming(across, 10)]}
  return out


# == Cache, groups =====================================================================================================
def fingerprint(root, files, cfg, classes=None):
  settings = [cfg.get(k) for k in SETTINGS] + [VERSION]
  h = hashlib.sha256(json.dumps(settings).encode())
  for k, f in enumerate(files):
    st = os.stat(os.path.join(root, f))
    h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{classes[k] if classes is not None else ''}\n".encode())
  return h.hexdigest()


def find_pairs_cached(root, files, cfg, cache_path, show_progress=True, classes=None):
  """find_pairs, reusing `cache_path` (gzip-compressed JSON) when it holds the result for the same files, classes
  and settings."""
  key = fingerprint(root, files, cfg, classes)
  if cache_path and fileio.exists(cache_path):
    try:
      with fileio.open(cache_path, "rb") as f:
        cached = json.loads(gzip.decompress(f.read()))
    except (OSError, ValueError):
      cached = {}  # Another format (an older release) or a torn file: computed again.
    if cached.get("fingerprint") == key:
      return cached
  found = {**find_pairs(root, files, cfg, show_progress, classes), "fingerprint": key}
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
