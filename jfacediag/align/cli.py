r"""Aligns a folder of photos into face crops in a backbone's convention, keeping the class-folder layout.

  python -m jfacediag.align --src raw/ --dst aligned/ --style arcface112 --detector yunet
  python -m jfacediag.align --src raw/ --dst aligned224/ --style paper --detector mtcnn --mtcnn-weights weights/mtcnn

Writes into DST: the crops (PNG, same relative paths), `manifest.csv` (source, output, box, five landmarks, score,
detector, style, fallback), `no_face.csv` (every photo where no face was found), `errors.csv` (unreadable files
with the reason) and `align.json` (style, detector, size, counts; training reads the style from it). A rerun
skips every source already listed in those files, so an interrupted run resumes.
"""
import argparse
import csv
import json
import multiprocessing
import os
import sys
import time

import cv2
import numpy as np

from jfacediag import cli_front, progress, workdir_lock
from jfacediag.align import detectors, folder, styles
from jfacediag.align.folder import ERRORS, INFO, MANIFEST, NO_FACE
from jfacediag.data import images

BOX_COLS = ("box_x1", "box_y1", "box_x2", "box_y2")
LANDMARK_COLS = tuple(f"lm{i}_{c}" for i in range(5) for c in "xy")  # lm0 image-left eye .. lm4 right mouth corner.
MANIFEST_COLS = ["source", "output", "face", *BOX_COLS, *LANDMARK_COLS, "score", "detector", "style", "fallback"]


def parse(argv):
  ap = argparse.ArgumentParser(prog="python -m jfacediag.align", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--src", required=True, help="folder of photos (class subfolders are kept)")
  ap.add_argument("--dst", required=True, help="output folder")
  ap.add_argument("--style", default="arcface112", choices=styles.STYLES)
  ap.add_argument("--size", type=int, default=0, help="output side (default: the style's own)")
  ap.add_argument("--detector", default="yunet", choices=("yunet", "mtcnn"))
  ap.add_argument("--mtcnn-weights", default="", help="folder with pnet/ rnet/ onet/ converted weights")
  ap.add_argument("--max-detect-side", type=int, default=0,
                  help="detect on a copy downscaled to this longer side (0: full size, as upstream; 1280 makes "
                       "MTCNN about 4x faster on 2-3k px photos and moves boxes by 1-3%%); crops use the original")
  ap.add_argument("--all-faces", action="store_true", help="keep every face (default: the largest one)")
  ap.add_argument("--fallback", default="none", choices=("none", "center"),
                  help="no face found: list it only (none) or also write a centre crop marked as a fallback")
  ap.add_argument("--jobs", type=int, default=1, help="worker processes")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def _sources(src):
  out = []
  for dirpath, dirnames, filenames in os.walk(src):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for name in sorted(filenames):
      if not name.startswith("."):
        out.append(os.path.relpath(os.path.join(dirpath, name), src).replace(os.sep, "/"))
  return out


def _outputs(rels):
  """Output name per source: the stem + .png; a stem shared by two files keeps its extension (a.jpg -> a.jpg.png)."""
  stems = {}
  for r in rels:
    stems.setdefault(os.path.splitext(r)[0], []).append(r)
  return {r: (os.path.splitext(r)[0] if len(stems[os.path.splitext(r)[0]]) == 1 else r) + ".png" for r in rels}


def _done(dst):
  return {row["source"] for name in (MANIFEST, NO_FACE, ERRORS) for row in folder.read_rows(dst, name)}


def _write_png(path, rgb):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.png"
  if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[..., ::-1])):
    raise OSError(f"cannot write {path}")
  os.replace(tmp, path)


_WORKER = {}


def _init(detector, mtcnn_weights, max_side):
  _WORKER["det"] = detectors.make(detector, mtcnn_weights, max_side)


def process(task):
  """Aligns one source. Returns (kind, rows): kind "ok" | "no_face" | "error"."""
  args, rel, out_rel = task
  det = _WORKER["det"]
  if not rel.lower().endswith(images.IMAGE_EXTENSIONS):
    return "error", [{"source": rel, "reason": "not an image file extension"}]
  try:
    img = images.load_rgb(os.path.join(args.src, rel))
  except images.UnreadableImage as e:
    return "error", [{"source": rel, "reason": str(e)}]
  try:
    faces = det.detect(img)
  except Exception as e:  # pylint: disable=broad-except  (an odd image must not stop a folder of thousands)
    return "error", [{"source": rel, "reason": f"detector failed: {type(e).__name__}: {e}"}]
  if not faces:
    rows = []
    if args.fallback == "center":
      _write_png(os.path.join(args.dst, out_rel), styles.centre_crop(img, args.style, args.size))
      rows = [{"source": rel, "output": out_rel, "face": 0, "detector": det.name, "style": args.style,
               "fallback": "center"}]
    return "no_face", rows
  if not args.all_faces:
    faces = [detectors.largest(faces)]
  rows = []
  for k, face in enumerate(faces):
    name = out_rel if len(faces) == 1 else f"{out_rel[:-4]}_face{k}.png"
    crop, _ = styles.align(img, face, args.style, args.size)
    _write_png(os.path.join(args.dst, name), crop)
    row = {"source": rel, "output": name, "face": k, "score": f"{face.score:.4f}", "detector": det.name,
           "style": args.style, "fallback": ""}
    row.update({c: f"{v:.2f}" for c, v in zip(BOX_COLS, face.box)})
    row.update({c: f"{v:.2f}" for c, v in zip(LANDMARK_COLS, face.landmarks.reshape(-1))})
    rows.append(row)
  return "ok", rows


class _Csv:
  """Appends rows to DST/name, writing the header when the file is new; flushed per row (resumable)."""

  def __init__(self, path, cols):
    new = not os.path.exists(path)
    self.f = open(path, "a", newline="", encoding="utf-8")  # pylint: disable=consider-using-with
    self.w = csv.DictWriter(self.f, cols, extrasaction="ignore")
    if new:
      self.w.writeheader()

  def write(self, row):
    self.w.writerow(row)
    self.f.flush()

  def close(self):
    self.f.close()


def run(args):
  if not os.path.isdir(args.src):
    raise FileNotFoundError(f"--src {args.src!r} is not a folder")
  if os.path.abspath(args.dst).startswith(os.path.abspath(args.src) + os.sep):
    raise ValueError("--dst must not be inside --src")
  with workdir_lock.held(args.dst, "--dst"):
    return _run(args)


def _run(args):
  info_path = os.path.join(args.dst, INFO)
  setting = {"style": args.style, "size": args.size, "detector": args.detector, "all_faces": args.all_faces,
             "fallback": args.fallback, "max_detect_side": args.max_detect_side}
  if os.path.exists(info_path):
    with open(info_path, encoding="utf-8") as f:
      old = json.load(f)["settings"]
    old.setdefault("max_detect_side", 1280)  # Folders aligned before the option existed were detected at 1280.
    if old != setting:
      raise ValueError(f"{args.dst} was aligned with {old}; this run asks {setting}. Use another --dst.")
  rels = _sources(args.src)
  outs = _outputs(rels)
  done = _done(args.dst)
  todo = [(args, r, outs[r]) for r in rels if r not in done]
  print(f"{len(rels)} files under {args.src}; {len(done)} done before; aligning {len(todo)} with {args.detector}, "
        f"style {args.style}.", flush=True)
  files = {"ok": _Csv(os.path.join(args.dst, MANIFEST), MANIFEST_COLS),
           "no_face": _Csv(os.path.join(args.dst, NO_FACE), ["source", "detector"]),
           "error": _Csv(os.path.join(args.dst, ERRORS), ["source", "reason"])}
  counts = {"ok": 0, "no_face": 0, "error": 0}
  t0 = time.perf_counter()
  if args.jobs > 1:
    pool = multiprocessing.get_context("spawn").Pool(args.jobs, _init, (args.detector, args.mtcnn_weights,
                                                                         args.max_detect_side))
    results = pool.imap(process, todo, chunksize=4)
  else:
    _init(args.detector, args.mtcnn_weights, args.max_detect_side)
    pool, results = None, map(process, todo)
  bar = progress.bar(results, total=len(todo), desc="align", unit="img", every_fraction=0.1)
  for (kind, rows), (_, rel, _) in zip(bar, todo):
    counts[kind] += 1
    if kind == "no_face":
      files["no_face"].write({"source": rel, "detector": args.detector})
      for row in rows:  # The marked centre crop of --fallback center.
        files["ok"].write(row)
    else:
      for row in rows:
        files[kind].write(row)
    bar.set_postfix(faces=counts["ok"], no_face=counts["no_face"], errors=counts["error"])
  if pool:
    pool.close()
    pool.join()
  for f in files.values():
    f.close()
  seconds = time.perf_counter() - t0
  total = {"aligned": counts["ok"], "no_face": counts["no_face"], "errors": counts["error"]}
  with open(info_path, "w", encoding="utf-8") as f:
    json.dump({"settings": setting, "last_run": {**total, "seconds": round(seconds, 2)}}, f, indent=2)
  print(f"Aligned {counts['ok']}, no face {counts['no_face']} (see {NO_FACE}), unreadable {counts['error']} (see "
        f"{ERRORS}) in {seconds:.1f}s ({len(todo) / max(seconds, 1e-9):.1f} img/s).", flush=True)
  return total


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError, ImportError, workdir_lock.Locked) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
