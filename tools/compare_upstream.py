#!/usr/bin/env python
"""Runs the upstream code beside jfacediag on your own photos and prints the largest differences: facenet-pytorch's
MTCNN (boxes, scores, landmarks), its extract_face (facenet160 crops), insightface's norm_crop (arcface112 crops)
and cydonia999's Resize(256) + CenterCrop(224) (vggface224 crops). Nothing leaves the machine.

  pip download facenet-pytorch==2.6.0 --no-deps -d wheels
  pip download insightface==2.1 --no-deps --no-binary :all: --no-build-isolation -d wheels    # optional
  python tools/compare_upstream.py --photos /data/faces --facenet-wheel wheels/facenet_pytorch-2.6.0-py3-none-any.whl \
      [--insightface-sdist wheels/insightface-2.1.tar.gz] [--max-detect-side 1280] [--limit 100]

Needs torch (pip install -e ".[dev]"). MTCNN weights are converted from the wheel's own pnet/rnet/onet.pt unless
--mtcnn-weights names converted ones. --max-detect-side also runs jfacediag on downscaled copies (what that
option does) and reports how far that moves the result from upstream's full-size detection.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image
import torch

from jfacediag import cli_front
from jfacediag.align import detectors, styles
from jfacediag.data import images
from jfacediag.reference import upstream


def _detection_diff(ref, faces):
  ub, us, ul = ref
  if len(faces) != len(ub):
    return np.inf, f"{len(ub)} faces upstream, {len(faces)} here"
  if not faces:
    return 0.0, "no face (both)"
  d = max(np.abs(ub - np.array([f.box for f in faces])).max(), np.abs(us - np.array([f.score for f in faces])).max(),
          np.abs(ul - np.array([f.landmarks for f in faces])).max())
  return float(d), f"{len(faces)} face(s)"


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--photos", nargs="+", required=True, help="image files and/or folders")
  ap.add_argument("--facenet-wheel", required=True, help=upstream.FACENET_WHEEL + " (pip download, see above)")
  ap.add_argument("--insightface-sdist", default="", help=upstream.INSIGHTFACE_SDIST + " for the arcface112 check")
  ap.add_argument("--mtcnn-weights", default="", help="converted MTCNN weights (default: converted from the wheel)")
  ap.add_argument("--max-detect-side", type=int, default=0, help="also measure detection on copies this size")
  ap.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
  ap.add_argument("--top", type=int, default=10, help="how many of the largest differences to list")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def main(argv=None):
  args = parse(argv)
  for path in (args.facenet_wheel, args.insightface_sdist):
    if path and not os.path.isfile(path):
      raise SystemExit(f"error: {path} does not exist; download it with the pip commands in --help")
  files = [f for f in images.expand(args.photos) if f.lower().endswith(images.IMAGE_EXTENSIONS)]
  files = files[:args.limit] if args.limit else files
  if not files:
    raise SystemExit(f"error: no image files under {args.photos}")
  torch.set_num_threads(os.cpu_count() or 1)
  with tempfile.TemporaryDirectory() as tmp:
    weights = args.mtcnn_weights or upstream.facenet_mtcnn_weights(args.facenet_wheel, tmp)
    facenet = upstream.facenet_mtcnn(args.facenet_wheel, tmp, select_largest=False)
    detect_face = sys.modules["_upstream_facenet_pytorch.models.utils.detect_face"]
    face_align = upstream.insightface_face_align(args.insightface_sdist, tmp) if args.insightface_sdist else None
    ours = detectors.make("mtcnn", weights)
    small = detectors.make("mtcnn", weights, args.max_detect_side) if args.max_detect_side else None
    rows = {"mtcnn": [], "downscaled": [], "arcface112": [], "facenet160": [], "vggface224": []}
    unreadable = []
    for i, f in enumerate(files):
      try:
        img = images.load_rgb(f)
      except images.UnreadableImage as e:
        unreadable.append((f, str(e)))
        continue
      with torch.no_grad():
        ref = upstream.facenet_detect(facenet, img)
      faces = ours.detect(img)
      d, what = _detection_diff(ref, faces)
      rows["mtcnn"].append((d, f, f"{img.shape[1]}x{img.shape[0]}, {what}"))
      if small is not None:
        d, what = _detection_diff(ref, small.detect(img))
        rows["downscaled"].append((d, f, f"{img.shape[1]}x{img.shape[0]}, {what}"))
      for box, marks in zip(*ref[::2]):  # The crops, on upstream's own detections.
        face = detectors.Face(box, 1.0, marks)
        if face_align is not None:
          crop, _ = styles.align(img, face, "arcface112")
          want = face_align.norm_crop(img, marks.astype(np.float32), 112)
          rows["arcface112"].append((int(np.abs(crop.astype(int) - want.astype(int)).max()), f, "grey levels"))
        crop, _ = styles.align(img, face, "facenet160")
        want = detect_face.extract_face(Image.fromarray(img), box, 160, 32).permute(1, 2, 0).numpy().astype(np.uint8)
        rows["facenet160"].append((int(np.abs(crop.astype(int) - want.astype(int)).max()), f, "grey levels"))
        crop, _ = styles.align(img, face, "vggface224")
        (x1, y1, x2, y2), (bw, bh) = box, 1.3 * (box[2:] - box[:2])
        loose = Image.fromarray(img).crop(((x1 + x2 - bw) / 2, (y1 + y2 - bh) / 2, (x1 + x2 + bw) / 2,
                                           (y1 + y2 + bh) / 2))
        want = np.asarray(upstream.torchvision_resize_centre_crop(loose))
        rows["vggface224"].append((int(np.abs(crop.astype(int) - want.astype(int)).max()), f, "grey levels"))
      if sys.stdout.isatty():
        print(f"\r{i + 1}/{len(files)} photos", end="", flush=True)
      elif (i + 1) % 50 == 0 or i + 1 == len(files):
        print(f"{i + 1}/{len(files)} photos", flush=True)
  if sys.stdout.isatty():
    print()
  for f, reason in unreadable:
    print(f"unreadable: {f}: {reason}")
  labels = {"mtcnn": "MTCNN vs facenet-pytorch (px / probability)",
            "downscaled": f"MTCNN at --max-detect-side {args.max_detect_side} vs facenet-pytorch at full size",
            "arcface112": "arcface112 vs insightface norm_crop", "facenet160": "facenet160 vs extract_face (PIL)",
            "vggface224": "vggface224 vs Resize(256) + CenterCrop(224) of the 1.3x box"}
  for key, found in rows.items():
    if not found:
      continue
    found.sort(key=lambda r: -r[0])
    over = sum(r[0] > (1e-3 if key in ("mtcnn", "downscaled") else 1) for r in found)
    print(f"\n{labels[key]}: {len(found)} compared, largest {found[0][0]:.3g}, {over} beyond tolerance "
          f"({'1e-3' if key in ('mtcnn', 'downscaled') else '1 grey level'})")
    for d, f, what in found[:args.top]:
      print(f"  {d:10.3g}  {f}  ({what})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
