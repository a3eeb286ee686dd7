#!/usr/bin/env python
"""MTCNN speed beside facenet-pytorch's own MTCNN, in one process on the same photos: detection only (boxes,
scores, landmarks), generated photos at several sizes (the astronaut's face at a random place and size on noise).

  pip download facenet-pytorch==2.6.0 --no-deps -d wheels
  python tools/bench_mtcnn.py --facenet-wheel wheels/facenet_pytorch-2.6.0-py3-none-any.whl [--n 20]
      [--sizes 150x150,640x480,1920x1080] [--photos DIR] [--mtcnn-weights weights/mtcnn] [--passes 2] [--oracle-nms]

Prints, per size, img/s for jfacediag (after a first pass over the photos, timed apart, which compiles the few
shape buckets they need) and for facenet-pytorch (eager), each the best of --passes passes over the photos, the two
sides' passes alternating, and their ratio (above 1: jfacediag is faster).
facenet-pytorch runs with a stand-in for torchvision's compiled NMS (torchvision cannot be installed beside this
stack): jfacediag's own numpy NMS (`align.mtcnn.nms`, the same kept boxes as torchvision's kernel:
tests/test_upstream.py), the fastest NMS here, rather than the tests' oracle with one pass per kept box
(`--oracle-nms`: facenet-pytorch 4-7% slower on the generated photos, 150x150 to 1080p). Its figure is still a
lower bound of what it does with torchvision's C++ kernel.
Needs torch (pip install -e ".[dev]").
"""
import argparse
import sys
import tempfile
import time

import cv2
import numpy as np
from skimage import data
import torch

from jfacediag import cli_front
from jfacediag.align import detectors
from jfacediag.align import mtcnn
from jfacediag.data import images
from jfacediag.reference import upstream


def photos(h, w, n, seed=0):
  rng = np.random.default_rng(seed)
  face = data.astronaut()[20:230, 130:330]
  out = []
  for _ in range(n):
    canvas = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    side = int(rng.uniform(0.3, 0.6) * min(h, w))
    patch = cv2.resize(face, (side, min(int(side * 210 / 200), h)))
    y, x = rng.integers(0, h - patch.shape[0] + 1), rng.integers(0, w - patch.shape[1] + 1)
    canvas[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    out.append(canvas)
  return out


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--facenet-wheel", required=True, help="facenet_pytorch-2.6.0-py3-none-any.whl")
  ap.add_argument("--mtcnn-weights", default="", help="converted pnet/rnet/onet (default: from the wheel)")
  ap.add_argument("--sizes", default="150x150,640x480,1920x1080", help="WxH,...")
  ap.add_argument("--n", type=int, default=20, help="timed photos per size")
  ap.add_argument("--photos", default="", help="also time the first N+1 photos of this folder (your own)")
  ap.add_argument("--passes", type=int, default=2, help="timed passes per side, alternating; the best counts")
  ap.add_argument("--oracle-nms", action="store_true",
                  help="facenet-pytorch's NMS stand-in is the tests' oracle (upstream._nms), not align.mtcnn.nms")
  args = ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))
  if args.n < 1 or args.passes < 1:
    ap.error(f"--n and --passes must be at least 1 (got {args.n} and {args.passes})")
  return args


def _rate(fn, imgs):
  t = time.perf_counter()
  for img in imgs:
    fn(img)
  return len(imgs) / (time.perf_counter() - t)


def _nms_stand_in(boxes, scores, threshold):
  return torch.as_tensor(mtcnn.nms(boxes.numpy(), scores.numpy(), threshold))


def main(argv=None):
  a = parse(argv)
  if not a.oracle_nms:
    upstream._nms = _nms_stand_in  # pylint: disable=protected-access  (batched_nms, in the stub, calls it)
  with tempfile.TemporaryDirectory() as tmp:
    weights_dir = a.mtcnn_weights or upstream.facenet_mtcnn_weights(a.facenet_wheel, tmp)
    ours = detectors.make("mtcnn", weights_dir)
    theirs = upstream.facenet_mtcnn(a.facenet_wheel, tmp, keep_all=True, device="cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.n} photos per size; facenet-pytorch's "
          f"NMS: {'the oracle, upstream._nms' if a.oracle_nms else 'align.mtcnn.nms'}")
    sets = [(size, photos(int(size.split("x")[1]), int(size.split("x")[0]), a.n + 1)) for size in a.sizes.split(",")]
    if a.photos:
      files = [f for f in images.expand([a.photos]) if f.lower().endswith(images.IMAGE_EXTENSIONS)][:a.n + 1]
      sets.append((f"{a.photos} ({len(files)} photos)", [images.load_rgb(f) for f in files]))
    for size, imgs in sets:
      t = time.perf_counter()
      for img in imgs:  # Compiles every shape bucket these photos need (PNet canvas, RNet/ONet crop batches).
        ours.detect(img)
      first = time.perf_counter() - t
      upstream.facenet_detect(theirs, imgs[0])
      r_ours = r_theirs = 0.0
      for _ in range(a.passes):  # Passes alternate, so both sides meet the machine's drift alike; best pass each.
        with torch.inference_mode():
          r_theirs = max(r_theirs, _rate(lambda x: upstream.facenet_detect(theirs, x), imgs[1:]))
        r_ours = max(r_ours, _rate(ours.detect, imgs[1:]))
      print(f"{size}: jfacediag {r_ours:.1f} img/s (first pass {first:.1f}s, compilation included), "
            f"facenet-pytorch {r_theirs:.1f} img/s; ratio {r_ours / r_theirs:.2f}", flush=True)


if __name__ == "__main__":
  main()
