"""One aligned face per file, for the identity and same-photo tiers: YuNet detection and arcface112 alignment, or
the crops of a folder that jfacediag.align wrote in a template style (used as they are; its centre-crop fallbacks
count as photos without a face)."""
import os

import cv2
import numpy as np

from jfacediag import progress
from jfacediag.align import detectors, styles
from jfacediag.data import aligned_folder, images


class Faces:
  """crop(i, 112): the embedder's crop of file i; crop(i, 224): the same-photo check's; None when faceless."""

  def __init__(self, root, files):
    self.root, self.files = root, files
    aligned = aligned_folder.settings(root)
    self.template = bool(aligned) and aligned["style"] in ("arcface112", "paper")
    self.landmarks = {}
    if self.template:
      rows = aligned_folder.read_rows(root, aligned_folder.MANIFEST)
      self.fallback = {r["output"] for r in rows if r.get("fallback")}
      self.how = f"the {aligned['style']} crops jfacediag.align wrote (no second detection)"
      self.no_face_reason = "a centre-crop fallback of jfacediag.align: no face was found in the photo"
    else:
      self.det = detectors.make("yunet")
      self.how = "YuNet detection, arcface112 alignment"
      self.no_face_reason = "YuNet found no face"

  def crop(self, i, size):
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


def embeddings(faces, embedder, show_progress):
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
