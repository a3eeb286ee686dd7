"""The duplicate tiers: exact copies (identical decoded pixels) and near copies (perceptual hash and thumbnail
correlation, the mirror included) of whole images."""
import hashlib
import os

import numpy as np
from PIL import Image
from scipy import fft

from jfacediag import progress
from jfacediag.data import images


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


def find(root, files, cfg, show_progress):
  """{(i, j): pair} of exact and near-duplicate files (i < j)."""
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
