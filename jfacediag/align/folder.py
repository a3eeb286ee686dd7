"""Aligning a folder of photos (the library under `python -m jfacediag.align`, jfacediag/align/cli.py).

`align(src, dst, Options(style=...))` writes the crops, manifest.csv, no_face.csv, errors.csv and align.json into dst
(their names and columns: jfacediag/data/aligned_folder.py) and resumes where an earlier run stopped.
"""
import csv
import dataclasses
import json
import multiprocessing
import os
import time

import cv2
import numpy as np

from jfacediag import progress, workdir_lock
from jfacediag.align import detectors, styles
from jfacediag.data import aligned_folder, images
from jfacediag.data.aligned_folder import BOX_COLS, ERRORS, INFO, LANDMARK_COLS, MANIFEST, MANIFEST_COLS, NO_FACE


@dataclasses.dataclass(frozen=True)
class Options:
  style: str = "arcface112"
  size: int = 0  # Output side (0: the style's own).
  detector: str = "yunet"
  mtcnn_weights: str = ""
  max_detect_side: int = 0  # Detect on a copy downscaled to this longer side (0: full size).
  all_faces: bool = False  # Every face, not only the largest.
  fallback: str = "none"  # "center": a marked centre crop where no face is found.
  jobs: int = 1  # Worker processes.


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
  return {row["source"] for name in (MANIFEST, NO_FACE, ERRORS) for row in aligned_folder.read_rows(dst, name)}


def pending(src, dst):
  """The image files under src that dst's CSVs do not list yet ([] for a finished run)."""
  done = _done(dst)
  return [r for r in _sources(src) if r.lower().endswith(images.IMAGE_EXTENSIONS) and r not in done]


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
  src, dst, args, rel, out_rel = task
  det = _WORKER["det"]
  if not rel.lower().endswith(images.IMAGE_EXTENSIONS):
    return "error", [{"source": rel, "reason": "not an image file extension"}]
  try:
    img = images.load_rgb(os.path.join(src, rel))
  except images.UnreadableImage as e:
    return "error", [{"source": rel, "reason": str(e)}]
  try:
    faces = det.detect(img)
  except Exception as e:  # pylint: disable=broad-except  (an odd image must not stop a folder of thousands)
    return "error", [{"source": rel, "reason": f"detector failed: {type(e).__name__}: {e}"}]
  if not faces:
    rows = []
    if args.fallback == "center":
      _write_png(os.path.join(dst, out_rel), styles.centre_crop(img, args.style, args.size))
      rows = [{"source": rel, "output": out_rel, "face": 0, "detector": det.name, "style": args.style,
               "fallback": "center"}]
    return "no_face", rows
  if not args.all_faces:
    faces = [detectors.largest(faces)]
  rows = []
  for k, face in enumerate(faces):
    name = out_rel if len(faces) == 1 else f"{out_rel[:-4]}_face{k}.png"
    crop, _ = styles.align(img, face, args.style, args.size)
    _write_png(os.path.join(dst, name), crop)
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


def align(src, dst, options=Options()):
  """Aligns every file under `src` into `dst` (resumable: sources listed in dst's CSVs are skipped); returns the
  counts {"aligned", "no_face", "errors"} of this run."""
  if not os.path.isdir(src):
    raise FileNotFoundError(f"--src {src!r} is not a folder")
  if os.path.abspath(dst).startswith(os.path.abspath(src) + os.sep):
    raise ValueError("--dst must not be inside --src")
  with workdir_lock.held(dst, "--dst"):
    return _run(src, dst, options)


def _run(src, dst, args):
  info_path = os.path.join(dst, INFO)
  setting = {"style": args.style, "size": args.size, "detector": args.detector, "all_faces": args.all_faces,
             "fallback": args.fallback, "max_detect_side": args.max_detect_side}
  if os.path.exists(info_path):
    with open(info_path, encoding="utf-8") as f:
      old = json.load(f)["settings"]
    old.setdefault("max_detect_side", 1280)  # Folders aligned before the option existed were detected at 1280.
    if old != setting:
      raise ValueError(f"{dst} was aligned with {old}; this run asks {setting}. Use another --dst.")
  rels = _sources(src)
  ignored = [r for r in rels if not r.lower().endswith(images.IMAGE_EXTENSIONS)]  # README.md, a CSV of metadata.
  rels = [r for r in rels if r.lower().endswith(images.IMAGE_EXTENSIONS)]
  if ignored:
    print(f"Ignored {len(ignored)} file(s) that are not images by their extension: {', '.join(ignored[:5])}"
          + (", ..." if len(ignored) > 5 else "") + ".", flush=True)
  outs = _outputs(rels)
  done = _done(dst)
  todo = [(src, dst, args, r, outs[r]) for r in rels if r not in done]
  print(f"{len(rels)} files under {src}; {len(done)} done before; aligning {len(todo)} with {args.detector}, "
        f"style {args.style}.", flush=True)
  files = {"ok": _Csv(os.path.join(dst, MANIFEST), MANIFEST_COLS),
           "no_face": _Csv(os.path.join(dst, NO_FACE), ["source", "detector"]),
           "error": _Csv(os.path.join(dst, ERRORS), ["source", "reason"])}
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
  for (kind, rows), (_, _, _, rel, _) in zip(bar, todo):
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
  total = {"aligned": counts["ok"], "no_face": counts["no_face"], "errors": counts["error"], "ignored": len(ignored)}
  with open(info_path, "w", encoding="utf-8") as f:
    json.dump({"settings": setting, "last_run": {**total, "seconds": round(seconds, 2)}}, f, indent=2)
  print(f"Aligned {counts['ok']}, no face {counts['no_face']} (see {NO_FACE}), unreadable {counts['error']} (see "
        f"{ERRORS}) in {seconds:.1f}s ({len(todo) / max(seconds, 1e-9):.1f} img/s).", flush=True)
  return total
