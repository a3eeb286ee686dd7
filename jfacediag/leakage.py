"""The leakage guard: duplicate images and same-person pairs that a split puts on both sides.

Small face sets gathered from publications and forums repeat images (re-encoded, resized, mirrored) and people.
Before a run trains, every pair of usable images is checked for:
  exact         identical decoded pixels (any container or file name);
  near          perceptual hash (DCT pHash, 64 bits) within leakage.max_hamming bits and pixel correlation of
                32x32 grey thumbnails >= leakage.min_correlation, the mirrored image included: re-encoded, resized,
                slightly recoloured or mirrored copies (aligned faces of different people share a layout, so the
                hash alone is not enough: on the demo's LFW faces the highest correlation is 0.87, a JPEG-60 copy
                at 70% size 0.999);
  same_person   cosine similarity of face-recognition embeddings (leakage.embedder) at or above the embedder's
                verification threshold: different photos of one person. Each image is aligned with YuNet first;
                images without a detected face are not compared (counted in the report).
Pairs whose two images fall in different splits (train / val / test, or a CV fold's train and test) are written to
WORKDIR/leakage.json, printed and listed in the report. `data.group_by` = "duplicates" or "identity" (duplicates and
same-person pairs) makes the split keep each connected cluster on one side.
"""
import argparse
import hashlib
import json
import os
import tempfile

import numpy as np
from PIL import Image
from scipy import fft
from tqdm import tqdm

from jfacediag import fileio
from jfacediag.data import images

# Cosine thresholds at which the embedder's authors call two faces the same person.
VERIFICATION_THRESHOLDS = {
    "sface": 0.363,  # OpenCV zoo face_recognition_sface: cosine >= 0.363 (L2 <= 1.128) on aligned crops.
}
LEAKAGE_FILE = "leakage.json"


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


def _hashes(root, files, show_progress):
  exact, ph, ph_mirror, thumbs, thumbs_mirror = [], [], [], [], []
  for f in tqdm(files, desc="leakage: hash images", unit="img", disable=not show_progress, leave=False):
    rgb = images.load_rgb(os.path.join(root, f))
    mirror = np.ascontiguousarray(rgb[:, ::-1])
    exact.append(hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest())
    ph.append(phash(rgb)), ph_mirror.append(phash(mirror))
    thumbs.append(thumbnail(rgb)), thumbs_mirror.append(thumbnail(mirror))
  return (exact, np.array(ph, np.uint64), np.array(ph_mirror, np.uint64), np.array(thumbs).reshape(len(files), -1),
          np.array(thumbs_mirror).reshape(len(files), -1))


def _embeddings(root, files, embedder):
  """(embeddings [n, d] with NaN rows for images without a face, arch name, no-face files)."""
  from jfacediag import embed  # pylint: disable=g-import-not-at-top
  paths = [os.path.join(root, f) for f in files]
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "emb.npz")
    embed.run(argparse.Namespace(weights=embedder, images=paths, out=out, align="arcface112", detector="yunet",
                                 mtcnn_weights="", batch=32), quiet=True)
    z = np.load(out)
    index = {p: i for i, p in enumerate(z["files"].tolist())}
    emb = np.full((len(files), z["embeddings"].shape[1]), np.nan, np.float32)
    for k, p in enumerate(paths):
      if p in index:
        emb[k] = z["embeddings"][index[p]]
    return emb, str(z["arch"]), [os.path.relpath(p, root).replace(os.sep, "/") for p in z["no_face"].tolist()]


def find_pairs(root, files, cfg, show_progress=True):
  """All duplicate and same-person pairs among `files` (relative to root). cfg = config.leakage."""
  files = list(files)
  exact, ph, phm, th, thm = _hashes(root, files, show_progress)
  pairs = []
  dist = np.minimum(np.bitwise_count(ph[:, None] ^ ph[None, :]), np.bitwise_count(ph[:, None] ^ phm[None, :]))
  corr = np.maximum(th @ th.T, th @ thm.T)
  ids = np.unique(exact, return_inverse=True)[1]
  same = ids[:, None] == ids[None, :]
  for i, j in zip(*np.nonzero(np.triu(same | ((dist <= cfg.max_hamming) & (corr >= cfg.min_correlation)), 1))):
    if same[i, j]:
      pairs.append({"a": files[i], "b": files[j], "kind": "exact", "score": 1.0})
    else:
      pairs.append({"a": files[i], "b": files[j], "kind": "near", "score": round(float(corr[i, j]), 4),
                    "hamming": int(dist[i, j])})
  out = {"files": len(files), "max_hamming": cfg.max_hamming, "min_correlation": cfg.min_correlation,
         "embedder": cfg.embedder, "threshold": None, "no_face": [], "pairs": pairs}
  if cfg.embedder and len(files) > 1:
    if show_progress:
      print(f"leakage: aligning and embedding {len(files)} images with {cfg.embedder} for the same-person check",
            flush=True)
    emb, arch, no_face = _embeddings(root, files, cfg.embedder)
    threshold = cfg.threshold or VERIFICATION_THRESHOLDS.get(arch)
    if not threshold:
      raise ValueError(f"leakage.embedder={cfg.embedder!r} is a {arch} network with no known verification "
                       f"threshold; set leakage.threshold (cosine) or use builtin:sface (0.363)")
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = np.nan_to_num(unit @ unit.T, nan=-1.0)
    seen = {(p["a"], p["b"]) for p in pairs}
    for i, j in zip(*np.nonzero(np.triu(cos >= threshold, 1))):
      if (files[i], files[j]) not in seen:
        pairs.append({"a": files[i], "b": files[j], "kind": "same_person", "score": round(float(cos[i, j]), 4)})
    out.update(threshold=float(threshold), arch=arch, no_face=no_face)
  return out


def fingerprint(root, files, cfg):
  h = hashlib.sha256(json.dumps([cfg.max_hamming, cfg.min_correlation, cfg.embedder, cfg.threshold]).encode())
  for f in files:
    st = os.stat(os.path.join(root, f))
    h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def find_pairs_cached(root, files, cfg, cache_path, show_progress=True):
  """find_pairs, reusing `cache_path` when it holds the result for the same files and settings."""
  key = fingerprint(root, files, cfg)
  if cache_path and fileio.exists(cache_path):
    cached = json.loads(fileio.read_text(cache_path))
    if cached.get("fingerprint") == key:
      return cached
  found = {**find_pairs(root, files, cfg, show_progress), "fingerprint": key}
  if cache_path:
    fileio.makedirs(os.path.dirname(cache_path))
    with fileio.open(cache_path, "w") as f:
      json.dump(found, f, indent=1)
  return found


def groups(files, pairs, kinds):
  """Connected clusters of `pairs` of the given kinds: {file: group id}, singletons included."""
  parent = {f: f for f in files}

  def root(f):
    while parent[f] != f:
      parent[f] = parent[parent[f]]
      f = parent[f]
    return f

  for p in pairs:
    if p["kind"] in kinds and p["a"] in parent and p["b"] in parent:
      parent[root(p["a"])] = root(p["b"])
  ids = {}
  return {f: ids.setdefault(root(f), len(ids)) for f in files}


GROUP_KINDS = {"duplicates": ("exact", "near"), "identity": ("exact", "near", "same_person")}


def cross_split(found, split_of):
  """Pairs whose images lie in two different splits (of train, val, test, holdout), with the splits."""
  out = []
  for p in found["pairs"]:
    sa, sb = split_of.get(p["a"]), split_of.get(p["b"])
    if sa and sb and sa != sb and {sa, sb} <= {"train", "val", "test", "holdout"}:
      out.append({**p, "split_a": sa, "split_b": sb})
  return out


def summary_lines(leak):
  """Human-readable lines for the log and report.md."""
  if not leak:
    return ["Not checked (leakage.check = False)."]
  cross = leak["cross_split"]
  kinds = {k: sum(p["kind"] == k for p in leak["pairs"]) for k in ("exact", "near", "same_person")}
  lines = [f"{leak['files']} images checked: {kinds['exact']} exact-duplicate, {kinds['near']} near-duplicate "
           f"(pHash <= {leak['max_hamming']} bits, correlation >= {leak['min_correlation']}) and "
           f"{kinds['same_person']} same-person pair(s)"
           + (f" ({leak['embedder']}, cosine >= {leak['threshold']}; {len(leak['no_face'])} image(s) without a "
              f"detected face not compared)" if leak.get("threshold") else " (no identity check: leakage.embedder "
                                                                          "is empty)")
           + f"; {len(cross)} pair(s) across splits"
           + (f"; data.group_by={leak['group_by']!r} kept clusters together." if leak.get("group_by") else
              (". Set data.group_by=identity to keep each cluster on one side." if cross else "."))]
  lines += [f"  {p['kind']}: {p['a']} ({p['split_a']}) ~ {p['b']} ({p['split_b']}), score {p['score']}"
            for p in cross]
  return lines
