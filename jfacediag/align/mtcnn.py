"""MTCNN face detection (Zhang et al. 2016) in JAX, on weights converted from facenet-pytorch's pnet/rnet/onet.pt.

The algorithm follows facenet-pytorch's `detect_face`: an image pyramid (factor 0.709 from 12 / min_face_size),
PNet proposals per scale (threshold 0.6, NMS 0.5), NMS 0.7 over scales, box regression, squaring; RNet on 24x24
crops (0.7, NMS 0.7, regression, squaring); ONet on 48x48 crops (0.7) giving five landmarks, regression and a final
NMS 0.7 on the intersection over the smaller box. Resizing is torch's area interpolation, reimplemented.

Checked against facenet-pytorch's own detect_face (tests/test_upstream.py, `tools/compare_upstream.py`): every
box, score and landmark within 1e-3 px on real photos from 131x141 to 2333x1434 px, odd pyramid sides included.
What it takes beyond the algorithm: PNet keeps the last cell of a level whose side minus 2 is odd (upstream's
ceil-mode pool), window corners are computed in float32 (a float64 floor() can land one pixel lower), the first
two NMS steps are torchvision's, and the last is upstream's numpy NMS, whose argsort decides ties. One thing is
not reproducible: upstream orders exactly tied scores in its first two NMS steps with torch's unstable CPU sort
(x86-simd-sort or std::sort, depending on the machine); here ties keep their position.

The networks are jit-compiled once per shape bucket: pyramid levels are zero-padded up to a multiple of 32 px
(PNet is told the real size, and cells that read padding are dropped) and crop batches up to a power of two, so a
folder of mixed photo sizes reuses a handful of compiled programs.

Weights: convert the three files once, e.g. from the facenet-pytorch 2.6.0 wheel's facenet_pytorch/data/:
  for n in pnet rnet onet; do python tools/convert_weights.py --arch mtcnn_$n --src $n.pt --out weights/mtcnn/$n; done
"""
import math
import os

import jax
import numpy as np

from jfacediag.models import mtcnn as nets
from jfacediag.models import weights

_BUCKET = 32


def _area_resize(img, h, w):
  """torch's F.interpolate(mode="area") (= adaptive average pooling), which facenet-pytorch uses: output cell i
  averages input rows [floor(i*H/h), ceil((i+1)*H/h)). Computed from an integral image."""
  img = img.astype(np.float64)
  hh, ww = img.shape[:2]
  integral = np.zeros((hh + 1, ww + 1) + img.shape[2:], np.float64)
  integral[1:, 1:] = img.cumsum(0).cumsum(1)
  i, j = np.arange(h), np.arange(w)
  r0, r1 = (i * hh) // h, -((-(i + 1) * hh) // h)
  c0, c1 = (j * ww) // w, -((-(j + 1) * ww) // w)
  total = (integral[np.ix_(r1, c1)] - integral[np.ix_(r0, c1)] - integral[np.ix_(r1, c0)]
           + integral[np.ix_(r0, c0)])
  area = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).astype(np.float64)
  return (total / area.reshape(area.shape + (1,) * (img.ndim - 2))).astype(np.float32)


def normalise(x):
  return (x.astype(np.float32) - 127.5) * 0.0078125


def nms(boxes, scores, threshold):
  """torchvision's nms (csrc/ops/cpu/nms_kernel.cpp), which facenet-pytorch runs after PNet and RNet: boxes by
  decreasing score, IoU without +1, suppress above `threshold`; float32 as its scalar_t loop."""
  if len(boxes) == 0:
    return np.zeros(0, np.int64)
  b = np.asarray(boxes, np.float32)
  x1, y1, x2, y2 = b.T
  area = (x2 - x1) * (y2 - y1)
  order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
    h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
    inter = w * h
    order = rest[~(inter / (area[i] + area[rest] - inter) > threshold)]
  return np.array(keep, np.int64)


def nms_min(boxes, scores, threshold):
  """facenet-pytorch's own `nms_numpy(..., 'Min')` (detect_face.py), its last step: intersection over the smaller
  box with +1 areas, candidates taken from the end of numpy's default argsort (which decides ties)."""
  if len(boxes) == 0:
    return np.zeros(0, np.int64)
  x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
  area = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(scores)
  pick = []
  while order.size > 0:
    i, idx = order[-1], order[0:-1]
    pick.append(i)
    w = np.maximum(0.0, np.minimum(x2[i], x2[idx]) - np.maximum(x1[i], x1[idx]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[idx]) - np.maximum(y1[i], y1[idx]) + 1)
    order = order[np.where(w * h / np.minimum(area[i], area[idx]) <= threshold)]
  return np.array(pick, np.int64)


def _rerec(b):
  """Squares boxes around their centres (side = the longer side)."""
  b = b.copy()
  w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  side = np.maximum(w, h)
  b[:, 0] += w * 0.5 - side * 0.5
  b[:, 1] += h * 0.5 - side * 0.5
  b[:, 2], b[:, 3] = b[:, 0] + side, b[:, 1] + side
  return b


def _bbreg(b, reg):
  b = b.copy()
  w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
  b[:, 0] += reg[:, 0] * w
  b[:, 1] += reg[:, 1] * h
  b[:, 2] += reg[:, 2] * w
  b[:, 3] += reg[:, 3] * h
  return b


def _crops(img, boxes, size):
  """facenet-pytorch `pad` + crop: truncated integer boxes clipped to the image, each resized to size x size."""
  h, w = img.shape[:2]
  b = np.trunc(boxes[:, :4]).astype(np.int64)
  x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
  ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
  out = np.zeros((len(b), size, size, 3), np.float32)
  for k in range(len(b)):
    if ey[k] > y[k] - 1 and ex[k] > x[k] - 1:
      out[k] = _area_resize(img[y[k] - 1:ey[k], x[k] - 1:ex[k]].astype(np.float32), size, size)
  return normalise(out)


class MTCNN:

  def __init__(self, weights_dir, min_face_size=20, thresholds=(0.6, 0.7, 0.7), factor=0.709):
    self.min_face_size, self.thresholds, self.factor = min_face_size, thresholds, factor
    self.vars = {}
    for name in ("pnet", "rnet", "onet"):
      path = os.path.join(weights_dir, name)
      variables, meta, _ = weights.load(path)
      if meta["arch"] != f"mtcnn_{name}":
        raise ValueError(f"{path} holds {meta['arch']} weights, expected mtcnn_{name}")
      self.vars[name] = jax.device_put({"params": variables["params"]})
    self.pnet = jax.jit(lambda v, x, valid: nets.PNet().apply(v, x, valid))
    self.rnet = jax.jit(lambda v, x: nets.RNet().apply(v, x))
    self.onet = jax.jit(lambda v, x: nets.ONet().apply(v, x))

  def _batched(self, fn, variables, x):
    n = len(x)
    size = max(16, 1 << (n - 1).bit_length())
    pad = np.zeros((size,) + x.shape[1:], np.float32)
    pad[:n] = x
    return [np.asarray(o)[:n] for o in fn(variables, pad)]

  def _stage1(self, img):
    h, w = img.shape[:2]
    m = 12.0 / self.min_face_size
    minl = min(h, w) * m
    scale, found = m, []
    while minl >= 12:
      hs, ws = int(h * scale + 1), int(w * scale + 1)
      level = normalise(_area_resize(img, hs, ws))
      ph, pw = math.ceil(hs / _BUCKET) * _BUCKET, math.ceil(ws / _BUCKET) * _BUCKET
      padded = np.zeros((1, ph, pw, 3), np.float32)
      padded[0, :hs, :ws] = level
      reg, prob = (np.asarray(o)[0] for o in self.pnet(self.vars["pnet"], padded, np.array([hs, ws])))
      oh, ow = -(-(hs - 2) // 2) - 4, -(-(ws - 2) // 2) - 4  # Cells of the unpadded level (ceil-mode pool).
      reg, prob = reg[:max(oh, 0), :max(ow, 0)], prob[:max(oh, 0), :max(ow, 0), 1]
      ys, xs = np.nonzero(prob >= self.thresholds[0])
      if len(ys):
        cell = np.stack([xs, ys], 1).astype(np.float32)  # float32 as upstream: floor() of a float64 quotient
        q1 = np.floor((2 * cell + 1) / np.float32(scale))  # can land one pixel lower.
        q2 = np.floor((2 * cell + 12) / np.float32(scale))
        boxes = np.concatenate([q1, q2, prob[ys, xs, None], reg[ys, xs]], 1).astype(np.float32)
        found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
      scale *= self.factor
      minl *= self.factor
    if not found:
      return np.zeros((0, 5), np.float32)
    b = np.concatenate(found)
    b = b[nms(b[:, :4], b[:, 4], 0.7)]
    rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b = np.stack([b[:, 0] + b[:, 5] * rw, b[:, 1] + b[:, 6] * rh, b[:, 2] + b[:, 7] * rw, b[:, 3] + b[:, 8] * rh,
                  b[:, 4]], 1)
    return _rerec(b)

  def detect(self, img):
    """img: HxWx3 uint8 RGB. Returns (boxes [n, 4] x1 y1 x2 y2, scores [n], landmarks [n, 5, 2]) best first, as
    facenet-pytorch's `MTCNN(select_largest=False).detect(img, landmarks=True)`."""
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    img = np.ascontiguousarray(img, dtype=np.uint8)
    boxes = self._stage1(img)
    if not len(boxes):
      return empty
    reg, prob = self._batched(self.rnet, self.vars["rnet"], _crops(img, boxes, 24))
    keep = prob[:, 1] > self.thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
    reg = reg[keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = _rerec(_bbreg(boxes[pick], reg[pick]))
    if not len(boxes):
      return empty
    reg, pts, prob = self._batched(self.onet, self.vars["onet"], _crops(img, boxes, 48))
    keep = prob[:, 1] > self.thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
    reg, pts = reg[keep], pts[keep]
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    marks = np.stack([w[:, None] * pts[:, :5] + boxes[:, :1] - 1, h[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1], -1)
    boxes = _bbreg(boxes, reg)
    pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
    boxes, marks = boxes[pick], marks[pick]  # In upstream's order: decreasing score.
    return boxes[:, :4], boxes[:, 4], marks.astype(np.float32)
