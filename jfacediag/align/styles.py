"""Alignment styles: how a detected face becomes the crop a backbone was trained on (backbones.md §7).

- arcface112: similarity transform (least squares, Umeyama) of the five landmarks onto the ArcFace template, warped
  to 112x112 (iResNet, SFace).
- facenet160: the box with a margin of 32 output pixels (facenet-pytorch `extract_face`), resized to 160x160.
- vggface224: the box grown by 30% (VGGFace2's loose training crop) and squared, shorter side 256, centre 224.
- paper: the landmark-based alignment of Jin et al.: a similarity transform of the landmarks onto the same
  template scaled to the backbone's input (224 by default), i.e. translation, rotation and scale, then the crop.
"""
import cv2
import numpy as np

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float64)
STYLES = ("arcface112", "facenet160", "vggface224", "paper")


def similarity(src, dst):
  """2x3 matrix of the least-squares similarity transform taking src points onto dst (Umeyama 1991)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s, d = src - mu_s, dst - mu_d
  cov = d.T @ s / len(src)
  u, sig, vt = np.linalg.svd(cov)
  e = np.eye(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    e[1, 1] = -1
  rot = u @ e @ vt
  scale = np.trace(np.diag(sig) @ e) / s.var(0).sum()
  t = mu_d - scale * rot @ mu_s
  return np.hstack([scale * rot, t[:, None]])


def _warp(img, m, size):
  return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align(img, face, style, size=0):
  """Returns (crop uint8 RGB, 2x3 matrix mapping image coordinates into the crop)."""
  if style in ("arcface112", "paper"):
    size = size or (112 if style == "arcface112" else 224)
    m = similarity(face.landmarks, ARCFACE_TEMPLATE * size / 112.0)
    return _warp(img, m, size), m
  x1, y1, x2, y2 = (float(v) for v in face.box)
  h, w = img.shape[:2]
  if style == "facenet160":  # The margin is in output pixels; the box is clipped to the image, then resized.
    size = size or 160
    mx, my = 32 * (x2 - x1) / (size - 32), 32 * (y2 - y1) / (size - 32)
    bx1, by1 = max(x1 - mx / 2, 0.0), max(y1 - my / 2, 0.0)
    bx2, by2 = min(x2 + mx / 2, float(w)), min(y2 + my / 2, float(h))
  elif style == "vggface224":  # Grow by 30%; shorter side to 256, centre 224 = the central 224/256 of that side.
    size = size or 224
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, 1.3 * min(x2 - x1, y2 - y1) * 224 / 256
    bx1, by1, bx2, by2 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
  else:
    raise ValueError(f"--style {style!r}; expected one of {', '.join(STYLES)}")
  sx, sy = size / (bx2 - bx1), size / (by2 - by1)
  m = np.array([[sx, 0, -bx1 * sx], [0, sy, -by1 * sy]])
  return _warp(img, m, size), m


def centre_crop(img, style, size=0):
  """The fallback when no face is found: the central square of the photo at the style's output size."""
  size = size or {"arcface112": 112, "facenet160": 160, "vggface224": 224, "paper": 224}[style]
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return cv2.resize(np.ascontiguousarray(img[top:top + s, left:left + s]), (size, size), interpolation=cv2.INTER_AREA)
