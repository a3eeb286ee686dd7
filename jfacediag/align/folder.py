"""An aligned folder (what `python -m jfacediag.align --dst` writes): its file names and its settings."""
import csv
import json
import os

MANIFEST, NO_FACE, ERRORS, INFO = "manifest.csv", "no_face.csv", "errors.csv", "align.json"
BOOKKEEPING = (MANIFEST, NO_FACE, ERRORS, INFO)


def settings(folder):
  """The align.json settings of `folder` ({"style", "size", "detector", ...}), or None if it was not aligned."""
  path = os.path.join(folder, INFO)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)["settings"]


def read_rows(folder, name):
  """The rows of one of the folder's CSV files ([] when it does not exist)."""
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    return []
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))
