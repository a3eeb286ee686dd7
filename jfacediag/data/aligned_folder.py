"""An aligned folder (what `python -m jfacediag.align --dst` writes): its file names, manifest columns and settings.

Read by training, prediction, embedding and the leakage guard; written by jfacediag.align.folder."""
import csv
import io
import json
import os

from jfacediag import fileio

MANIFEST, NO_FACE, ERRORS, INFO = "manifest.csv", "no_face.csv", "errors.csv", "align.json"
BOOKKEEPING = (MANIFEST, NO_FACE, ERRORS, INFO)
BOX_COLS = ("box_x1", "box_y1", "box_x2", "box_y2")
LANDMARK_COLS = tuple(f"lm{i}_{c}" for i in range(5) for c in "xy")  # lm0 image-left eye .. lm4 right mouth corner.
MANIFEST_COLS = ["source", "output", "face", *BOX_COLS, *LANDMARK_COLS, "score", "detector", "style", "fallback"]


def settings(folder):
  """The align.json settings of `folder` ({"style", "size", "detector", ...}), or None if it was not aligned."""
  path = os.path.join(folder, INFO)
  if not fileio.exists(path):
    return None
  return json.loads(fileio.read_text(path))["settings"]


def read_rows(folder, name):
  """The rows of one of the folder's CSV files ([] when it does not exist)."""
  path = os.path.join(folder, name)
  if not fileio.exists(path):
    return []
  return list(csv.DictReader(io.StringIO(fileio.read_text(path), newline="")))
