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
folder of mixed photo sizes reuses a handful of compiled programs. One integral image per photo serves every pyramid
level and every RNet/ONet crop (the crops of a stage are resized in one vectorised gather); `tools/bench_mtcnn.py`
times it beside facenet-pytorch.

Weights: convert the three files once, e.g. from the facenet-pytorch 2.6.0 wheel's facenet_pytorch/data/:
  for n in pnet rnet onet; do python tools/convert_weights.py --arch mtcnn_$n --src $n.pt --out weights/mtcnn/$n; done
"""
import os

import jax
import numpy as np

from jfacediag.models import mtcnn as nets
from jfacediag.models import weights

# Padded pyramid-level sides: about 1.5x apart, so a folder of photos of every size compiles PNet for a few dozen
# shapes instead of one per 32 px step (the padding is never read: PNet is told each level's real size).
_SIDES = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def _bucket(n):
  return next((s for s in _SIDES if s >= n), -(-n // 512) * 512)


class _Integral:
  """torch's F.interpolate(mode="area") (= adaptive average pooling), which facenet-pytorch uses, for the whole
  image and for any crop of it: output cell i averages input rows [floor(i*H/h), ceil((i+1)*H/h)). One integral
  image per photo serves every pyramid level and every RNet/ONet crop; its sums of uint8 pixels are exact integers
  in float64, so the result equals an integral image of each crop to the last bit."""

  def __init__(self, img):
    self.integral = np.zeros((img.shape[0] + 1, img.shape[1] + 1) + img.shape[2:], np.float64)
    self.integral[1:, 1:] = img.astype(np.float64).cumsum(0).cumsum(1)

  def resize(self, h, w, y0=0, y1=None, x0=0, x1=None):
    """img[y0:y1, x0:x1] resized to h x w, float32."""
    y1 = self.integral.shape[0] - 1 if y1 is None else y1
    x1 = self.integral.shape[1] - 1 if x1 is None else x1
    return self.resize_many(h, w, np.array([y0]), np.array([y1]), np.array([x0]), np.array([x1]))[0]

  def resize_many(self, h, w, y0, y1, x0, x1):
    """Crops img[y0[k]:y1[k], x0[k]:x1[k]] (int arrays [n], non-empty), each resized to h x w: [n, h, w, C]."""
    hh, ww = (y1 - y0)[:, None], (x1 - x0)[:, None]
    i, j = np.arange(h)[None], np.arange(w)[None]
    r0, r1 = y0[:, None] + (i * hh) // h, y0[:, None] - ((-(i + 1) * hh) // h)  # [n, h]
    c0, c1 = x0[:, None] + (j * ww) // w, x0[:, None] - ((-(j + 1) * ww) // w)  # [n, w]
    t = self.integral

    def at(r, c):
      return t[r[:, :, None], c[:, None, :]]
    total = at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).astype(np.float64)
    return (total / area.reshape(area.shape + (1,) * (t.ndim - 2))).astype(np.float32)


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


def _crops(integral, boxes, size):
  """facenet-pytorch `pad` + crop: truncated integer boxes clipped to the image, each resized to size x size."""
  h, w = integral.integral.shape[0] - 1, integral.integral.shape[1] - 1
  b = np.trunc(boxes[:, :4]).astype(np.int64)
  x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
  ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
  out = np.zeros((len(b), size, size, 3), np.float32)
  ok = (ey > y - 1) & (ex > x - 1)  # An empty crop stays zero, as upstream's.
  if ok.any():
    out[ok] = integral.resize_many(size, size, y[ok] - 1, ey[ok], x[ok] - 1, ex[ok])
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

  def _stage1(self, integral):
    h, w = integral.integral.shape[0] - 1, integral.integral.shape[1] - 1
    m = 12.0 / self.min_face_size
    minl = min(h, w) * m
    scale, found = m, []
    while minl >= 12:
      hs, ws = int(h * scale + 1), int(w * scale + 1)
      level = normalise(integral.resize(hs, ws))
      ph, pw = _bucket(hs), _bucket(ws)
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
    integral = _Integral(np.ascontiguousarray(img, dtype=np.uint8))
    boxes = self._stage1(integral)
    if not len(boxes):
      return empty
    reg, prob = self._batched(self.rnet, self.vars["rnet"], _crops(integral, boxes, 24))
    keep = prob[:, 1] > self.thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
    reg = reg[keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = _rerec(_bbreg(boxes[pick], reg[pick]))
    if not len(boxes):
      return empty
    reg, pts, prob = self._batched(self.onet, self.vars["onet"], _crops(integral, boxes, 48))
    keep = prob[:, 1] > self.thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
    reg, pts = reg[keep], pts[keep]
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    marks = np.stack([w[:, None] * pts[:, :5] + boxes[:, :1] - 1, h[:, None] * pts[:, 5:] + boxes[:, 1:2] - 1], -1)
    boxes = _bbreg(boxes, reg)
    pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
    boxes, marks = boxes[pick], marks[pick]  # In upstream's order: decreasing score.
    return boxes[:, :4], boxes[:, 4], marks.astype(np.float32)
