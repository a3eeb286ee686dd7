"""Scanning a folder of labelled images, splitting it, and the manifest that records the split.

Layouts: `root/<class>/<image>` or `root/{train,test[,val]}/<class>/<image>`. Every file under a class folder ends up
in the manifest: as an example of a split, as `unused` (per_class leaves the rest of a class out), or as `skipped`
with the reason (unreadable, too large, ...). Files that are not images by their extension (a README, a CSV of
metadata) and hidden files are ignored; the first are counted in one line of the log.
"""
import csv
import dataclasses
import io
import json
import os

import numpy as np
from sklearn import model_selection

from jfacediag import fileio, progress
from jfacediag.data import images, records

SPLIT_FOLDERS = ("train", "val", "test")
MANIFEST = "manifest.csv"
SPLIT_SETTINGS = "split.json"


@dataclasses.dataclass
class Row:
  file: str  # Relative to the data dir, with "/" separators.
  class_name: str
  split: str  # train | val | test | holdout (kfold on train/+test/ folders) | unused | skipped
  reason: str = ""


def _list_dir(path):
  return sorted(os.listdir(path))


def scan(root, classes=None, show_progress=True):
  """Lists the class folders of `root` and decodes every file once. Returns (layout, classes, rows).

  rows have split = the folder split ("train"/"test"/"val") for the `folders` layout, "" for a flat layout, or
  "skipped" with a reason. `classes` fixes the label order and must match the folders exactly.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"data.dir={root!r} is not a directory")
  top = [d for d in _list_dir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")]
  layout = layout_of(root)
  parts = [s for s in SPLIT_FOLDERS if s in top] if layout == "folders" else [""]
  found = set()
  entries = []
  for part in parts:
    base = os.path.join(root, part)
    for cls in _list_dir(base):
      cdir = os.path.join(base, cls)
      if not os.path.isdir(cdir) or cls.startswith("."):
        continue
      found.add(cls)
      for dirpath, dirnames, filenames in os.walk(cdir):
        dirnames.sort()
        for name in sorted(filenames):
          if name.startswith("."):
            continue  # .DS_Store, ._resource forks, editor swap files.
          rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
          entries.append((rel, cls, part))
  if not found:
    raise ValueError(f"data.dir={root!r} holds no class subfolders (expected {root}/<class>/<image> or "
                     f"{root}/train/<class>/... and {root}/test/<class>/...)")
  if classes:
    missing, extra = sorted(set(classes) - found), sorted(found - set(classes))
    if missing or extra:
      raise ValueError(f"data.classes does not match the class folders of {root}:\n"
                       + "".join(f"- {c} (in data.classes, no folder)\n" for c in missing)
                       + "".join(f"+ {c} (folder, not in data.classes)\n" for c in extra))
  else:
    classes = sorted(found)

  ignored = [rel for rel, _, _ in entries if not rel.lower().endswith(images.IMAGE_EXTENSIONS)]
  if ignored and show_progress:
    progress.log(f"Ignored {len(ignored)} file(s) in the class folders that are not images by their extension: "
                 + ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "") + ".")
  rows = []
  images_only = [e for e in entries if e[0].lower().endswith(images.IMAGE_EXTENSIONS)]
  for rel, cls, part in progress.bar(images_only, desc="scan images", unit="img", disable=not show_progress,
                                     leave=False):
    reason = images.check(os.path.join(root, rel))
    rows.append(Row(rel, cls, "skipped" if reason else part, reason or ""))

  usable = {c: sum(r.class_name == c and r.split != "skipped" for r in rows) for c in classes}
  empty = [c for c, n in usable.items() if n == 0]
  if empty:
    raise ValueError(f"class(es) {empty} have no readable image in {root} "
                     f"(skipped: {[(r.file, r.reason) for r in rows if r.class_name in empty]})")
  return layout, list(classes), rows


def layout_of(root):
  """"folders" when `root` holds train/ and test/ subfolders, else "flat"; a records dataset keeps its folder's."""
  if records.is_records(root):
    return records.read_index(root)["layout"]
  return "folders" if all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")) else "flat"


def settings_for(cfg, layout):
  """The split settings a data config asks for: what the manifest records and a resumed run must match."""
  strategy = cfg.split if cfg.split != "auto" else ("folders" if layout == "folders" else "per_class")
  settings = {"strategy": strategy, "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction}
  settings.update({"per_class": dict(train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class),
                   "fraction": dict(test_fraction=cfg.test_fraction),
                   "kfold": dict(num_folds=cfg.num_folds, fold=cfg.fold)}.get(strategy, {}))
  if cfg.group_by:  # Only when set, so manifests written before group_by existed still match.
    settings["group_by"] = cfg.group_by
  if strategy == "kfold" and layout == "folders":
    if cfg.kfold_on not in ("train", "all"):
      raise ValueError(f"data.kfold_on={cfg.kfold_on!r}; expected 'train' or 'all'")
    settings["kfold_on"] = cfg.kfold_on
  return settings


def _units(members, group_of):
  """Members bundled by group (a group keeps its first member's position); each unit is a list of rows."""
  if group_of is None:
    return [[r] for r in members]
  units = {}
  for r in members:
    units.setdefault(group_of[r.file], []).append(r)
  return list(units.values())


def _per_class(usable, classes, cfg, rng, group_of):
  need = cfg.train_per_class + cfg.test_per_class
  for cls in classes:
    n = sum(r.class_name == cls for r in usable)
    if n < need:
      raise ValueError(f"class {cls!r} has {n} readable images; data.split='per_class' needs "
                       f"train_per_class + test_per_class = {cfg.train_per_class} + {cfg.test_per_class} = {need}")
  if group_of is None:
    for cls in classes:
      members = [r for r in usable if r.class_name == cls]
      for rank, i in enumerate(rng.permutation(len(members))):
        members[i].split = "train" if rank < cfg.train_per_class else "test" if rank < need else "unused"
    return
  # Groups (which may span classes) go whole into train while every class of theirs fits, else into test, else
  # unused: counts never exceed the caps; a class can fall short when its images come in large groups.
  units = _units(usable, group_of)
  caps = {"train": cfg.train_per_class, "test": cfg.test_per_class}
  count = {s: {c: 0 for c in classes} for s in caps}
  for i in rng.permutation(len(units)):
    need_by = {}
    for r in units[i]:
      need_by[r.class_name] = need_by.get(r.class_name, 0) + 1
    dest = next((s for s in ("train", "test") if all(count[s][c] + k <= caps[s] for c, k in need_by.items())),
                "unused")
    for r in units[i]:
      r.split = dest
      if dest != "unused":
        count[dest][r.class_name] += 1


def _fraction(usable, classes, cfg, rng, group_of):
  for cls in classes:
    members = [r for r in usable if r.class_name == cls]
    n_test = round(cfg.test_fraction * len(members))
    if not 0 < n_test < len(members):
      raise ValueError(f"class {cls!r}: test_fraction={cfg.test_fraction} of {len(members)} images gives "
                       f"{n_test} test images; need at least 1 in each of train and test")
  units = _units(usable, group_of)
  target = {c: round(cfg.test_fraction * sum(r.class_name == c for r in usable)) for c in classes}
  count = {c: 0 for c in classes}
  for i in rng.permutation(len(units)):
    cls = units[i][0].class_name
    dest = "test" if count[cls] < target[cls] else "train"
    for r in units[i]:
      r.split = dest
      count[r.class_name] += dest == "test"


def _kfold(usable, classes, cfg, group_of):
  if not 0 <= cfg.fold < cfg.num_folds:
    raise ValueError(f"data.fold={cfg.fold} is outside 0..num_folds-1={cfg.num_folds - 1}")
  labels = np.array([classes.index(r.class_name) for r in usable])
  if np.bincount(labels, minlength=len(classes)).min() < cfg.num_folds:
    raise ValueError(f"data.num_folds={cfg.num_folds} exceeds the images of the smallest class "
                     f"({np.bincount(labels, minlength=len(classes)).min()})")
  if group_of is None:
    kf = model_selection.StratifiedKFold(cfg.num_folds, shuffle=True, random_state=cfg.split_seed)
    folds = kf.split(np.zeros(len(labels)), labels)
  else:
    kf = model_selection.StratifiedGroupKFold(cfg.num_folds, shuffle=True, random_state=cfg.split_seed)
    folds = kf.split(np.zeros(len(labels)), labels, [group_of[r.file] for r in usable])
  _, test_idx = list(folds)[cfg.fold]
  test_set = set(test_idx.tolist())
  for i, r in enumerate(usable):
    r.split = "test" if i in test_set else "train"


def assign(rows, classes, layout, cfg, group_of=None):
  """Fills in each usable row's split from the data config (`cfg` = config.data). Returns the settings used.

  group_of ({file: cluster id}, for data.group_by) keeps each cluster in one split. With the `folders` layout,
  data.split='kfold' folds the train/ (and val/) images and marks test/ as `holdout` (data.kfold_on='train'):
  cross-validation on the training part, every fold model also scored on the fixed test set (jfacediag.cv's fold
  ensemble); data.kfold_on='all' folds every image and ignores the folders.
  """
  settings = settings_for(cfg, layout)
  strategy = settings["strategy"]
  usable = [r for r in rows if r.split != "skipped"]
  rng = np.random.default_rng(cfg.split_seed)
  if strategy == "folders":
    if layout != "folders":
      raise ValueError(f"data.split='folders' needs train/ and test/ folders under {cfg.dir!r}")
    if group_of is not None:
      raise ValueError("data.group_by needs a split jfacediag draws (per_class, fraction or kfold); the train/ and "
                       "test/ folders are a fixed split (leakage across them is still reported)")
  elif strategy == "kfold":
    if layout == "folders" and cfg.kfold_on == "all":
      for r in usable:
        r.split = ""
    elif layout == "folders":
      for r in usable:
        r.split = "holdout" if r.split == "test" else ""
      usable = [r for r in usable if r.split != "holdout"]
    _kfold(usable, classes, cfg, group_of)
  else:
    if layout == "folders":
      raise ValueError(f"{cfg.dir!r} is already split into train/ and test/; use data.split='folders', 'kfold' "
                       "or 'auto'")
    if strategy == "per_class":
      _per_class(usable, classes, cfg, rng, group_of)
    elif strategy == "fraction":
      _fraction(usable, classes, cfg, rng, group_of)
    else:
      raise ValueError(f"data.split={cfg.split!r}; expected one of auto, folders, per_class, fraction, kfold")

  if group_of is not None:
    check_grouped(usable, classes, strategy, cfg, group_of)
  if cfg.val_fraction > 0:
    if any(r.split == "val" for r in usable):
      raise ValueError("data.val_fraction > 0 but the data folder already has a val/ split; set it to 0")
    vrng = np.random.default_rng([cfg.split_seed, 1])
    for cls in classes:
      members = [r for r in usable if r.class_name == cls and r.split == "train"]
      n_val = max(1, round(cfg.val_fraction * len(members)))
      if n_val >= len(members):
        raise ValueError(f"class {cls!r}: val_fraction={cfg.val_fraction} leaves no training image "
                         f"({len(members)} in train)")
      units, taken = _units(members, group_of), 0
      for i in vrng.permutation(len(units)):
        if taken >= n_val:
          break
        for r in units[i]:
          if r.class_name == cls:
            r.split, taken = "val", taken + 1
  return settings


def check_grouped(usable, classes, strategy, cfg, group_of, tolerance=0.2):
  """Refuses a grouped split that leaves a class without training or test images, or moves a class's share more
  than `tolerance` (relative, at least 2 images) from what the split asks: grouping by clusters that are too large
  (for example an identity check that links different people) would otherwise change the experiment silently."""
  bad = []
  for cls in classes:
    members = [r for r in usable if r.class_name == cls]
    got = {s: sum(r.split == s for r in members) for s in ("train", "test")}
    if strategy == "per_class":
      want = {"train": cfg.train_per_class, "test": cfg.test_per_class}
    elif strategy == "fraction":
      want = {"test": cfg.test_fraction * len(members)}
      want["train"] = len(members) - want["test"]
    else:  # kfold: this fold's share.
      want = {"test": len(members) / cfg.num_folds}
      want["train"] = len(members) - want["test"]
    for s in ("train", "test"):
      if got[s] == 0 or (strategy == "per_class" and got[s] < want[s] - max(2, tolerance * want[s])) or (
          strategy != "per_class" and abs(got[s] - want[s]) > max(2, tolerance * want[s])):
        bad.append(f"class {cls!r}: {got['train']} train / {got['test']} test images, the split asks about "
                   f"{want['train']:.0f} / {want['test']:.0f}")
        break
  if not bad:
    return
  sizes = {}
  for r in usable:
    sizes[group_of[r.file]] = sizes.get(group_of[r.file], 0) + 1
  largest = sorted((n for n in sizes.values() if n > 1), reverse=True)
  raise ValueError(
      f"data.group_by={cfg.group_by!r} cannot keep the requested split: " + "; ".join(bad) + ". Its clusters of "
      f"more than one image: {len(largest)}, the largest holding {', '.join(map(str, largest[:8]))} of "
      f"{len(usable)} images. If they link different people, check leakage_pairs.png and leakage.json (the "
      f"identity thresholds per condition pair and the similarity histogram) and lower leakage.false_match_rate or "
      f"set leakage.threshold; or, with one photo per patient, leakage.identity='off' or "
      f"data.group_by='duplicates'.")


def write(workdir, rows, settings, classes):
  """Writes WORKDIR/manifest.csv (file, class, split, reason) and WORKDIR/split.json (settings, class order)."""
  fileio.makedirs(workdir)
  tmp = os.path.join(workdir, MANIFEST + ".tmp")
  with fileio.open(tmp, "w") as f:
    w = csv.writer(f)
    w.writerow(["file", "class", "split", "reason"])
    for r in rows:
      w.writerow([r.file, r.class_name, r.split, r.reason])
  fileio.replace(tmp, os.path.join(workdir, MANIFEST))
  with fileio.open(os.path.join(workdir, SPLIT_SETTINGS), "w") as f:
    json.dump({"settings": settings, "classes": list(classes)}, f, indent=2)


def read(workdir):
  """Returns (rows, settings, classes) from WORKDIR, or (None, None, None) when there is no manifest yet."""
  path = os.path.join(workdir, MANIFEST)
  if not fileio.exists(path):
    return None, None, None
  rows = [Row(d["file"], d["class"], d["split"], d["reason"])
          for d in csv.DictReader(io.StringIO(fileio.read_text(path), newline=""))]
  stored = json.loads(fileio.read_text(os.path.join(workdir, SPLIT_SETTINGS)))
  return rows, stored["settings"], stored["classes"]


def check_same_settings(stored, wanted):
  """Raises when the split settings of a resumed run differ from those its manifest was written with."""
  keys = sorted(set(stored) | set(wanted))
  diff = [f"  {k}: manifest has {stored.get(k)!r}, config asks {wanted.get(k)!r}"
          for k in keys if stored.get(k) != wanted.get(k)]
  if diff:
    raise ValueError("The workdir's manifest.csv was written with other split settings; use a new --workdir or "
                     "restore the settings:\n" + "\n".join(diff))


def examples(rows, classes, split):
  """(files, labels) of one split, in manifest order."""
  sel = [r for r in rows if r.split == split]
  return [r.file for r in sel], np.array([classes.index(r.class_name) for r in sel], dtype=np.int32)
