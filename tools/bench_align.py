#!/usr/bin/env python
"""Alignment speed: a generated folder of 640x480 photos (the astronaut's face at random places, sizes and small
rotations on noise), aligned by `python -m jfacediag.align`'s own code, timed end to end (decode, detect, warp,
write PNG, CSV bookkeeping).

  python tools/bench_align.py --n 200                                        # yunet
  python tools/bench_align.py --n 200 --detector mtcnn --mtcnn-weights weights/mtcnn

Prints seconds, images/s and how many faces were found.
"""
import argparse
import os
import tempfile
import time

import cv2
import numpy as np
from PIL import Image
from skimage import data

from jfacediag.align import cli


def make_photos(root, n, seed=0):
  rng = np.random.default_rng(seed)
  face = data.astronaut()[20:230, 130:330]
  for i in range(n):
    canvas = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    side = int(rng.uniform(120, 300))
    patch = cv2.resize(face, (side, int(side * 210 / 200)))
    rot = cv2.getRotationMatrix2D((patch.shape[1] / 2, patch.shape[0] / 2), rng.uniform(-10, 10), 1.0)
    patch = cv2.warpAffine(patch, rot, patch.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    y, x = rng.integers(0, 480 - patch.shape[0]), rng.integers(0, 640 - patch.shape[1])
    canvas[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    os.makedirs(os.path.join(root, f"class{i % 2}"), exist_ok=True)
    Image.fromarray(canvas).save(os.path.join(root, f"class{i % 2}", f"{i:04d}.jpg"), quality=92)


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--n", type=int, default=200)
  ap.add_argument("--detector", default="yunet", choices=("yunet", "mtcnn"))
  ap.add_argument("--mtcnn-weights", default="")
  ap.add_argument("--style", default="arcface112")
  ap.add_argument("--jobs", type=int, default=1)
  return ap.parse_args(argv)


def main():
  a = parse()
  with tempfile.TemporaryDirectory() as d:
    make_photos(os.path.join(d, "raw"), a.n)
    args = cli.parse(["--src", os.path.join(d, "raw"), "--dst", os.path.join(d, "out"), "--style", a.style,
                      "--detector", a.detector, "--mtcnn-weights", a.mtcnn_weights, "--jobs", str(a.jobs)])
    t = time.perf_counter()
    counts = cli.run(args)
    seconds = time.perf_counter() - t
  print(f"{a.detector}: {a.n} photos 640x480 in {seconds:.1f}s ({a.n / seconds:.1f} img/s, model load and "
        f"compilation included); aligned {counts['aligned']}, no face {counts['no_face']}")


if __name__ == "__main__":
  main()
