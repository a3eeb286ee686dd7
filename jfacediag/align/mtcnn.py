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

One PNet call per photo: every pyramid level is packed into one zero-padded canvas (a skyline packing at even
offsets, so the stride-2 pool grid of each level is its own; PNet gets a mask of the conv1 outputs that read only
one level's pixels, and the cells of each level are read back from its place). Canvas sides and crop batches are
rounded up to a few bucketed sizes, so a folder of mixed photo sizes reuses a handful of compiled programs; RNet and
ONet run in chunks of at most 256 crops. One integral image per photo serves every pyramid level (rows, then
columns) and every RNet/ONet crop (the crops of a stage are resized in one vectorised gather);
`tools/bench_mtcnn.py` times it beside facenet-pytorch.

Weights: convert the three files once, e.g. from the facenet-pytorch 2.6.0 wheel's facenet_pytorch/data/:
  for n in pnet rnet onet; do python tools/convert_weights.py --arch mtcnn_$n --src $n.pt --out weights/mtcnn/$n; done
"""
import os

import jax
import numpy as np

from jfacediag import cpu
from jfacediag.models import mtcnn as nets
from jfacediag.models import weights

_CHUNK = 256  # RNet/ONet crops per call.


def _bucket(n):
  """n rounded up to a multiple of 32 (up to 256), else to one of 8 sizes per octave (at most 12.5% more): the
  sides a folder of mixed photo sizes compiles PNet for."""
  step = 32 if n <= 256 else 1 << (n.bit_length() - 4)
  return -(-n // step) * step


class _Integral:
  """torch's F.interpolate(mode="area") (= adaptive average pooling), which facenet-pytorch uses, for the whole
  image and for any crop of it: output cell i averages input rows [floor(i*H/h), ceil((i+1)*H/h)). One integer
  integral image per photo serves every pyramid level (rows, then columns) and every RNet/ONet crop. The sums of
  uint8 pixels are exact integers, divided by the cell's area in float32 where both are float32 integers (else in
  float64): either rounds the exact quotient once, so every value is the exact mean rounded to float32 (torch's
  kernel, which accumulates in float32, differs from it by up to 1.5e-5)."""

  def __init__(self, img):
    self.h, self.w = img.shape[:2]
    dtype = np.int32 if 255 * self.h * self.w < 1 << 31 else np.int64
    self.table = np.zeros((self.h + 1, self.w + 1) + img.shape[2:], dtype)
    inner = self.table[1:, 1:]
    inner[:] = img
    for i in range(1, self.h):  # Rows as one vector add each: 5x faster than numpy's cumsum over axis 0.
      np.add(inner[i - 1], inner[i], out=inner[i])
    np.cumsum(inner, 1, out=inner)

  @staticmethod
  def _bounds(n, size, start):
    i = np.arange(n)[None]
    return start[:, None] + (i * size[:, None]) // n, start[:, None] - ((-(i + 1) * size[:, None]) // n)

  @staticmethod
  def _mean(total, area):
    area = area.reshape(area.shape + (1,) * (total.ndim - area.ndim))
    exact = 255 * int(area.max(initial=1)) < 1 << 24  # Every sum and area is a float32 integer.
    return (total.astype(np.float32) / area.astype(np.float32) if exact
            else (total / area.astype(np.float64)).astype(np.float32))

  def resize(self, h, w):
    """The whole image resized to h x w, float32."""
    (r0,), (r1,) = self._bounds(h, np.array([self.h]), np.array([0]))
    (c0,), (c1,) = self._bounds(w, np.array([self.w]), np.array([0]))
    band = np.take(self.table, r1, 0) - np.take(self.table, r0, 0)  # [h, W+1, C]: row bands, summed columns.
    return self._mean(np.take(band, c1, 1) - np.take(band, c0, 1), (r1 - r0)[:, None] * (c1 - c0)[None, :])

  def resize_many(self, h, w, y0, y1, x0, x1):
    """Crops img[y0[k]:y1[k], x0[k]:x1[k]] (int arrays [n], non-empty), each resized to h x w: [n, h, w, C]."""
    r0, r1 = self._bounds(h, y1 - y0, y0)  # [n, h]
    c0, c1 = self._bounds(w, x1 - x0, x0)  # [n, w]
    flat = self.table.reshape((self.h + 1) * (self.w + 1), -1)

    def at(r, c):
      return np.take(flat, (r[:, :, None] * (self.w + 1) + c[:, None, :]).reshape(-1), 0)
    total = (at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)).reshape((len(y0), h, w) + self.table.shape[2:])
    return self._mean(total, (r1 - r0)[:, :, None] * (c1 - c0)[:, None, :])


def pyramid(h, w, min_face_size=20, factor=0.709):
  """facenet-pytorch's scales for an h x w photo: [(scale, level height, level width)], largest first."""
  m = 12.0 / min_face_size
  minl, scale, out = min(h, w) * m, m, []
  while minl >= 12:
    out.append((scale, int(h * scale + 1), int(w * scale + 1)))
    scale *= factor
    minl *= factor
  return out


def _skyline(sides, width):
  """Bottom-left skyline packing of (h, w) rectangles, in order, in a canvas `width` wide, at even offsets (each
  side rounded up to even): each goes where its top edge ends lowest (then leftmost). The offsets [(y, x)] and
  the canvas height, or None when a rectangle is wider than the canvas."""
  sky = [(0, width, 0)]  # Segments (x, w, y) of the skyline, left to right, covering [0, width).
  at = []
  for h, w in sides:
    h, w = h + h % 2, w + w % 2
    best = None
    for x, _, _ in sky:
      if x + w > width:
        break
      y = max(sy for sx, sw, sy in sky if sx < x + w and sx + sw > x)
      if best is None or (y, x) < best:
        best = (y, x)
    if best is None:
      return None
    y, x = best
    at.append(best)
    cut = [(a, b - a, sy) for sx, sw, sy in sky for a, b in ((sx, min(sx + sw, x)), (max(sx, x + w), sx + sw))
           if b > a]
    sky = sorted(cut + [(x, w, y + h)])
  return at, max(y + h + h % 2 for (y, _), (h, _) in zip(at, sides))


def pack(sides):
  """A canvas for every pyramid level of one photo: (canvas height, width, [(y, x)] per level). Skyline packings
  of the levels (largest first) at every bucketed width from the widest level's to all side by side, and the
  same for the transposed levels (fixed heights); the one with the smallest bucketed canvas wins. On the pyramids
  of 150x150 to 4032x3024 photos the canvas is 1.1-1.4 times the levels' area (next-fit shelves: 1.3-1.5)."""
  best = None
  for flip in (False, True):
    rects = [(w, h) if flip else (h, w) for h, w in sides]
    widest, total = rects[0][1] + rects[0][1] % 2, sum(w + w % 2 for _, w in rects)
    for width in sorted({_bucket(v) for v in range(widest, total + 1, 2)}):
      packed = _skyline(rects, width)
      if packed is None:
        continue
      at, height = packed
      side = (_bucket(height), width)
      if flip:
        side, at = side[::-1], [(x, y) for y, x in at]
      if best is None or side[0] * side[1] < best[0] * best[1]:
        best = (*side, at)
  return best


def normalise(x):
  return (x.astype(np.float32) - 127.5) * 0.0078125


_NMS_BLOCK = 256  # Boxes whose overlaps with every later box nms computes at once.


def nms(boxes, scores, threshold):
  """torchvision's nms (csrc/ops/cpu/nms_kernel.cpp), which facenet-pytorch runs after PNet and RNet: boxes by
  decreasing score, IoU without +1, suppress above `threshold`; float32 as its scalar_t loop. The overlaps of a
  block of boxes (those not yet suppressed) with every later box are computed at once and the greedy pass only
  reads them (cProfile of `tools/bench_mtcnn.py --sizes 1920x1080`, ~650 PNet proposals a photo: 6 ms per photo in
  all against 22 ms for one IoU pass per kept box). Rows suppressed by an earlier block are skipped, so heavy
  suppression costs about what the one-pass loop did."""
  if len(boxes) == 0:
    return np.zeros(0, np.int64)
  order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
  x1, y1, x2, y2 = np.asarray(boxes, np.float32)[order].T
  area = (x2 - x1) * (y2 - y1)
  n = len(order)
  suppressed = np.zeros(n, bool)
  keep = []
  for s in range(0, n, _NMS_BLOCK):
    block = s + np.flatnonzero(~suppressed[s:s + _NMS_BLOCK])  # Not yet suppressed by an earlier block.
    rows, cols = np.s_[block, None], np.s_[s:]
    w = np.maximum(np.float32(0), np.minimum(x2[rows], x2[cols]) - np.maximum(x1[rows], x1[cols]))
    h = np.maximum(np.float32(0), np.minimum(y2[rows], y2[cols]) - np.maximum(y1[rows], y1[cols]))
    inter = w * h
    over = inter / (area[rows] + area[cols] - inter) > threshold  # [len(block), n - s]
    for k, i in enumerate(block):
      if not suppressed[i]:
        keep.append(order[i])
        suppressed[s:] |= over[k]
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
  h, w = integral.h, integral.w
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
    self.pnet = cpu.jit(lambda v, x, valid: nets.PNet().apply(v, x, valid))
    self.rnet = cpu.jit(lambda v, x: nets.RNet().apply(v, x))
    self.onet = cpu.jit(lambda v, x: nets.ONet().apply(v, x))
    self._layouts = {}

  def _batched(self, fn, variables, x):
    """fn on x in chunks of at most _CHUNK (the last padded to a power of two, at least 16): all chunks are
    dispatched before any is read back."""
    outs = []
    for i in range(0, len(x), _CHUNK):
      part = x[i:i + _CHUNK]
      pad = np.zeros((max(16, 1 << (len(part) - 1).bit_length()),) + x.shape[1:], np.float32)
      pad[:len(part)] = part
      outs.append((len(part), fn(variables, pad)))
    return [np.concatenate([np.asarray(o[k])[:n] for n, o in outs]) for k in range(len(outs[0][1]))]

  def _layout(self, h, w):
    """Pyramid levels of an h x w photo, their places in one canvas and the canvas's conv1 mask (cached)."""
    if (h, w) not in self._layouts:
      levels = pyramid(h, w, self.min_face_size, self.factor)
      if not levels:  # Smaller than the smallest face.
        return [], [], None, None
      ch, cw, at = pack([(hs, ws) for _, hs, ws in levels])
      mask = np.zeros((ch - 2, cw - 2), bool)
      for (_, hs, ws), (y, x) in zip(levels, at):
        mask[y:y + hs - 2, x:x + ws - 2] = True
      if len(self._layouts) >= 64:  # A folder of many photo sizes: forget the oldest.
        self._layouts.pop(next(iter(self._layouts)))
      self._layouts[(h, w)] = (levels, at, (ch, cw), jax.device_put(mask))
    return self._layouts[(h, w)]

  def _stage1(self, integral):
    h, w = integral.h, integral.w
    levels, at, canvas_side, mask = self._layout(h, w)
    if not levels:
      return np.zeros((0, 5), np.float32)
    canvas = np.zeros((1,) + canvas_side + (3,), np.float32)
    for (_, hs, ws), (y, x) in zip(levels, at):
      canvas[0, y:y + hs, x:x + ws] = normalise(integral.resize(hs, ws))
    reg_all, prob_all = (np.asarray(o)[0] for o in self.pnet(self.vars["pnet"], canvas, mask))
    found = []
    for (scale, hs, ws), (y, x) in zip(levels, at):
      oh, ow = max(-(-(hs - 2) // 2) - 4, 0), max(-(-(ws - 2) // 2) - 4, 0)  # Cells of the level (ceil-mode pool).
      cells = np.s_[y // 2:y // 2 + oh, x // 2:x // 2 + ow]
      reg, prob = reg_all[cells], prob_all[cells][..., 1]
      ys, xs = np.nonzero(prob >= self.thresholds[0])
      if len(ys):
        cell = np.stack([xs, ys], 1).astype(np.float32)  # float32 as upstream: floor() of a float64 quotient
        q1 = np.floor((2 * cell + 1) / np.float32(scale))  # can land one pixel lower.
        q2 = np.floor((2 * cell + 12) / np.float32(scale))
        boxes = np.concatenate([q1, q2, prob[ys, xs, None], reg[ys, xs]], 1).astype(np.float32)
        found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
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
