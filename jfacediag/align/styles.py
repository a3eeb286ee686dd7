"""Alignment styles: how a detected face becomes the crop a backbone was trained on (README: What each network
receives).

Each style writes the network's input crop itself: the input pipeline feeds aligned crops as they are (resized to
the input side if it differs), never cropping them a second time. Where an upstream exists the crop equals it
(tests/test_upstream.py):
- arcface112: similarity transform (least squares, Umeyama) of the five landmarks onto the ArcFace template, warped
  to 112x112 with cv2.warpAffine (bilinear, border 0): insightface's `norm_crop` (iResNet, SFace; OpenCV's
  FaceRecognizerSF.alignCrop uses the same template).
- facenet160: facenet-pytorch's `extract_face` on a PIL image: a margin of 32 output pixels around the box, the box
  truncated to integers and clipped to the photo, PIL crop, PIL bilinear resize to 160x160.
- vggface224: cydonia999/VGGFace2-pytorch's evaluation input on the box grown by 30% (VGGFace2's loose training
  crop): PIL crop of the grown box (coordinates rounded, black outside the photo), torchvision Resize(256)
  (shorter side, PIL bilinear) and CenterCrop(224).
- paper: the landmark-based alignment of Jin et al.: a similarity transform of the landmarks onto the same
  template scaled to the backbone's input (224 by default), i.e. translation, rotation and scale, then the crop.
"""
import cv2
import numpy as np
from PIL import Image
from skimage import transform

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float64)
SIZES = {"arcface112": 112, "facenet160": 160, "vggface224": 224, "paper": 224}  # Default output side per style.
STYLES = tuple(SIZES)


def similarity(src, dst):
  """2x3 matrix of the least-squares similarity transform taking src points onto dst (Umeyama 1991), computed as
  insightface's estimate_norm does: scikit-image's estimator on float32 points. On downscaling warps the bilinear
  kernel's 1/32-pixel grid turns a 1e-5 px change of the matrix into up to 8 grey levels at an edge, so the
  arithmetic is upstream's own, not an equivalent one."""
  src, dst = np.asarray(src, np.float32), np.asarray(dst, np.float32)
  if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
    return transform.SimilarityTransform.from_estimate(src, dst).params[:2]
  t = transform.SimilarityTransform()
  t.estimate(src, dst)
  return t.params[:2]


def _warp(img, m, size):
  return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align(img, face, style, size=0):
  """Returns (crop uint8 RGB, 2x3 matrix mapping image coordinates into the crop)."""
  if style in ("arcface112", "paper"):
    size = size or SIZES[style]
    m = similarity(face.landmarks, ARCFACE_TEMPLATE.astype(np.float32) * (size / 112.0))  # estimate_norm's dst.
    return _warp(img, m, size), m
  if style == "facenet160":
    return _facenet_crop(img, face.box, size or 160, 32)
  if style == "vggface224":
    return _vggface2_crop(img, face.box, size or 224)
  raise ValueError(f"--style {style!r}; expected one of {', '.join(STYLES)}")


def _facenet_crop(img, box, size, margin):
  """facenet-pytorch `extract_face(PIL image, box, size, margin)`: the margin is in output pixels."""
  x1, y1, x2, y2 = (float(v) for v in box)
  h, w = img.shape[:2]
  mx, my = margin * (x2 - x1) / (size - margin), margin * (y2 - y1) / (size - margin)
  b = [int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0)), int(min(x2 + mx / 2, w)), int(min(y2 + my / 2, h))]
  b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
  crop = np.asarray(Image.fromarray(img).crop(b).resize((size, size), Image.BILINEAR))
  sx, sy = size / max(b[2] - b[0], 1), size / max(b[3] - b[1], 1)
  return crop, np.array([[sx, 0, -b[0] * sx], [0, sy, -b[1] * sy]])


def _vggface2_crop(img, box, size):
  """cydonia999's eval transform (Resize(256), CenterCrop(224), scaled when size != 224) of the 1.3x box."""
  x1, y1, x2, y2 = (float(v) for v in box)
  cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, 1.3 * (x2 - x1), 1.3 * (y2 - y1)
  b = [round(cx - bw / 2), round(cy - bh / 2), round(cx + bw / 2), round(cy + bh / 2)]  # What PIL's crop does.
  b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
  loose = Image.fromarray(img).crop(b)
  w, h = loose.size
  resize = round(size * 256 / 224)
  short, long = min(w, h), max(w, h)
  new_long = int(resize * long / short)
  nw, nh = (resize, new_long) if w <= h else (new_long, resize)
  top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
  crop = np.asarray(loose.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size)))
  sx, sy = nw / w, nh / h
  return crop, np.array([[sx, 0, -b[0] * sx - left], [0, sy, -b[1] * sy - top]])


def centre_crop(img, style, size=0):
  """The fallback when no face is found: the central square of the photo at the style's output size."""
  size = size or SIZES[style]
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return cv2.resize(np.ascontiguousarray(img[top:top + s, left:left + s]), (size, size), interpolation=cv2.INTER_AREA)
