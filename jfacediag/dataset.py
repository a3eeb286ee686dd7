"""A run's data: the folder (given or generated), its split (WORKDIR/manifest.csv, reused on resume), the leakage
guard's result, and the checks that refuse data which cannot give a meaningful result.

  ds = dataset.prepare(config, workdir)   # ds.root, ds.classes, ds.train = (files, labels), ds.test, ...
"""
import dataclasses
import json
import os

import jax
from jax.experimental import multihost_utils

from jfacediag import fileio, leakage, models, progress
from jfacediag.align import folder as aligner
from jfacediag.data import aligned_folder, images, lfw_subset, records, splits, toy

SPLITS = ("train", "val", "test", "holdout")
_LEAK_SHOWN = set()  # (data dir, split) whose leakage summary this process printed in full.


@dataclasses.dataclass
class Dataset:
  root: str  # The class folders.
  classes: list  # Class names, in label order.
  rows: list  # splits.Row for every file, skipped ones included (the manifest).
  leak: dict  # The leakage guard's summary (WORKDIR/leakage.json), None when the guard is off.
  examples: dict  # {split: (files, int32 labels)} for SPLITS.

  @property
  def train(self):
    return self.examples["train"]

  @property
  def val(self):
    return self.examples["val"]

  @property
  def test(self):
    return self.examples["test"]

  @property
  def holdout(self):
    return self.examples["holdout"]

  @property
  def skipped(self):
    """[(file, class, reason)] of the files left out (unreadable, no face, ...)."""
    return [(r.file, r.class_name, r.reason) for r in self.rows if r.split == "skipped"]

  @property
  def counts(self):
    """{split: images}; holdout only when the data have one."""
    return {s: len(self.examples[s][0]) for s in SPLITS if s != "holdout" or self.examples[s][0]}


def prepare(config, workdir):
  """The data of a run: folder, split (written to WORKDIR on process 0), leakage guard; logs a summary and raises
  ValueError on data that cannot be trained and tested on."""
  root = data_dir_for(config, workdir)
  rows, classes, leak = load_split(config, root, workdir)
  ds = Dataset(root, classes, rows, leak, {s: splits.examples(rows, classes, s) for s in SPLITS})
  skipped = ds.skipped
  progress.log(f"Data {root}: {len(classes)} classes, {ds.counts}; {len(skipped)} file(s) skipped"
               + "".join(f"\n  skipped {f}: {r}" for f, _, r in skipped[:20])
               + (f"\n  ... and {len(skipped) - 20} more (WORKDIR/manifest.csv lists them)" if len(skipped) > 20
                  else ""))
  if leak is not None:
    key = (root, hash(tuple(sorted((r.file, r.split) for r in rows))))
    if key in _LEAK_SHOWN:  # A method comparison: the same data and split as the method before.
      progress.log(f"Leakage guard: as reported above for this data and split "
                   f"({sum(leak['cross_split'].values())} pair(s) across the split).")
    else:
      _LEAK_SHOWN.add(key)
      progress.log(("WARNING: leakage: " if sum(leak["cross_split"].values()) else "Leakage guard: ")
                   + "\n".join(leakage.summary_lines(leak)))
  for s in ("train", "test"):
    if not ds.counts[s]:
      raise ValueError(f"The {s} split is empty; check data.split and the folder {root}")
  check_classes(rows, classes, root, config)
  return ds


def check_folder(cfg):
  """Refuses, before any workdir is made, a data.dir that is not a folder or holds fewer than two class folders."""
  if not cfg.dir or fileio.is_remote(cfg.dir):  # A bucket holds a records dataset: checked when it is read.
    return
  root = os.path.abspath(os.path.expanduser(cfg.dir))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"data.dir={root!r} is not a directory")
  base = os.path.join(root, "train") if splits.layout_of(root) == "folders" else root
  found = [d for d in sorted(os.listdir(base)) if os.path.isdir(os.path.join(base, d)) and not d.startswith(".")]
  if len(found) == 1:
    raise ValueError(f"{root} has one class ({found[0]!r}): a classifier needs at least two class folders")


def data_dir_for(config, workdir):
  """config.data.dir (aligned into WORKDIR/data first with data.align='auto'), or a generated folder under
  WORKDIR/data for data.generate='toy' or 'lfw_subset'."""
  cfg = config.data
  if cfg.dir:
    root = fileio.absolute(cfg.dir)
    if fileio.is_remote(root) and not records.is_records(root):
      raise ValueError(f"data.dir={root}: a bucket (or other remote path) must hold a records dataset "
                       "(python -m jfacediag.build --src FOLDER --out URL); a folder of images must be local")
    return aligned_for(config, root, workdir) if cfg.align == "auto" else root
  if cfg.generate not in ("", "toy", "lfw_subset"):
    raise ValueError(f"data.generate={cfg.generate!r}; expected '', 'toy' or 'lfw_subset'")
  if fileio.is_remote(workdir):
    raise ValueError(f"data.generate={cfg.generate!r} writes images into the workdir, which must then be local; "
                     f"got {workdir}. Generate locally and pass --config.data.dir")
  if cfg.generate == "toy":
    root = os.path.join(workdir, "data")
    toy.make_folder(root, num_classes=3, per_class=cfg.train_per_class + cfg.test_per_class)
    return root
  if cfg.generate == "lfw_subset":  # The photos in data/photos, aligned (resumable) into data/aligned.
    photos, aligned = os.path.join(workdir, "data", "photos"), os.path.join(workdir, "data", "aligned")
    lfw_subset.write_photos(photos)
    if not aligned_folder.settings(aligned):
      aligner.align(photos, aligned, aligner.Options(style="arcface112", fallback="center"))
    return aligned
  raise ValueError("config.data.dir is empty: pass --config.data.dir=/path/to/class/folders "
                   "(or data.generate='toy' / 'lfw_subset' for a generated folder)")


def align_style(config):
  """The jfacediag.align style that config.model.backbone was trained on ("" = none in particular)."""
  if config.model.backbone == "ensemble":
    raise ValueError("data.align='auto' needs one backbone to know the alignment style; for an ensemble, align the "
                     "folder first (python -m jfacediag.align --src DIR --dst ALIGNED --style STYLE) and pass "
                     "--config.data.dir=ALIGNED --config.data.align=")
  return models.get(config.model.backbone).align_style


def aligned_for(config, root, workdir):
  """data.align='auto': `root` when jfacediag.align already aligned it in the backbone's style, else its copy
  aligned (once, resumably) into WORKDIR/data/aligned-<style>."""
  if records.is_records(root):  # Aligned when it was built (a style other than the backbone's is warned about).
    return root
  style = align_style(config)
  have = aligned_folder.settings(root)
  if not style or (have and have["style"] == style):
    if not style:
      progress.log(f"data.align='auto': {config.model.backbone} was trained on no alignment style in particular; "
                   f"using {root} as it is.")
    return root
  if have:
    progress.log(f"data.align='auto': {root} holds {have['style']} crops; {config.model.backbone} was trained on "
                 f"{style} crops.")
  if fileio.is_remote(workdir):
    raise ValueError(f"data.align='auto' writes aligned faces into the workdir, which must then be local; got "
                     f"{workdir}. Align first (python -m jfacediag.align --src {root} --dst ALIGNED --style {style}) "
                     "and pass --config.data.dir=ALIGNED --config.data.align=")
  dst = os.path.join(workdir, "data", f"aligned-{style}")
  source = _source(dst)
  if source not in (None, root):
    raise ValueError(f"{dst} holds faces aligned from {source}, not from data.dir={root}; use another --workdir")
  if jax.process_index() == 0 and not _aligned_complete(root, dst):
    progress.log(f"data.align='auto': aligning {root} in {style} style (the style {config.model.backbone} was trained "
                 f"on) into {dst}; done once, rerunning resumes it.")
    aligner.align(root, dst, aligner.Options(style=style, fallback="center"))
    _record_source(dst, root)
  if jax.process_count() > 1:  # The others wait for process 0's folder (a workdir every process sees).
    multihost_utils.sync_global_devices("jfacediag data.align")
  return dst


def _aligned_complete(src, dst):
  """A finished jfacediag.align run: dst is aligned and lists every image file under src."""
  return bool(aligned_folder.settings(dst)) and not aligner.pending(src, dst)


def _source(dst):
  """The folder that data.align='auto' aligned into dst (from its align.json), None if unknown."""
  path = os.path.join(dst, aligned_folder.INFO)
  return json.loads(fileio.read_text(path)).get("source") if fileio.exists(path) else None


def _record_source(dst, root):
  """Writes the source folder into dst's align.json, so that a workdir aligned from one folder refuses another."""
  path = os.path.join(dst, aligned_folder.INFO)
  info = json.loads(fileio.read_text(path))
  info["source"] = root
  with fileio.open(path, "w") as f:
    json.dump(info, f, indent=2)


def load_split(config, root, workdir):
  """Reuses WORKDIR/manifest.csv when present (after checking its settings), else scans and splits.

  Returns (rows, classes, leak): leak is the leakage guard's result (WORKDIR/leakage.json), None when off.
  """
  cfg = config.data
  wanted_classes = list(cfg.classes) or None
  rows, stored, classes = splits.read(workdir)
  wanted = splits.settings_for(cfg, splits.layout_of(root))
  leak_path = os.path.join(workdir, leakage.LEAKAGE_FILE)
  if rows is not None:
    splits.check_same_settings(stored, wanted)
    if wanted_classes and wanted_classes != classes:
      raise ValueError(f"data.classes={wanted_classes} differs from the manifest's class order {classes}")
    leak = leakage.upgrade(json.loads(fileio.read_text(leak_path))) if fileio.exists(leak_path) else None
    return rows, classes, leak
  stored = records.is_records(root)  # A records dataset: its index, and the pairs its build found.
  if stored:
    layout, classes, rows = records.rows(root, wanted_classes)
    rows = [splits.Row(*r) for r in rows]
  else:
    layout, classes, rows = splits.scan(root, wanted_classes, show_progress=jax.process_index() == 0)
  if len(classes) < 2:  # Before the leakage guard and before anything is written to the workdir.
    raise ValueError(f"{root} has one class ({classes[0]!r}): a classifier needs at least two class folders")
  if cfg.group_by and cfg.group_by not in leakage.GROUP_KINDS:
    raise ValueError(f"data.group_by={cfg.group_by!r}; expected '', {', '.join(map(repr, leakage.GROUP_KINDS))}")
  if cfg.group_by == "identity" and not config.leakage.embedder:
    raise ValueError("data.group_by='identity' needs leakage.embedder (face-recognition weights, e.g. builtin:sface)")
  rows += [] if stored else alignment_drops(root, classes)
  found = None
  if stored and (config.leakage.check or cfg.group_by):
    found = records.leakage_pairs(root)
    if found is None and cfg.group_by:
      raise ValueError(f"data.group_by={cfg.group_by!r}: the records at {root} were built with --no-leakage, so they "
                       "hold no pairs to group by; build them again without it")
    progress.log(f"Leakage guard: the pairs found when {root} was built (default leakage settings; the guard needs "
                 "the images, which the records hold but do not rescan).")
  elif config.leakage.check or cfg.group_by:
    usable = [r for r in rows if r.split != "skipped"]
    lcfg = config.leakage.copy_and_resolve_references()
    if cfg.group_by == "duplicates" and not config.leakage.check:
      lcfg.embedder = ""
    found = leakage.find_pairs_cached(root, [r.file for r in usable], lcfg, config.leakage.cache,
                                      jax.process_index() == 0, classes=[r.class_name for r in usable])
  group_of = leakage.groups([r.file for r in rows if r.split != "skipped"], found,
                            leakage.GROUP_KINDS[cfg.group_by]) if cfg.group_by else None
  settings = splits.assign(rows, classes, layout, cfg, group_of)
  split_of = {r.file: r.split for r in rows}
  leak = leakage.summarise(found, split_of, cfg.group_by, config.leakage.top_pairs) if found is not None else None
  if jax.process_index() == 0:
    splits.write(workdir, rows, settings, classes)
    if leak is not None:
      leakage.write(workdir, found, leak, root, split_of)
  return rows, classes, leak


def check_classes(rows, classes, root, config):
  """Refuses data that cannot give a meaningful result: one class, or a class with no training or test image, or a
  fine-tuning batch larger than the training split."""
  if len(classes) < 2:
    raise ValueError(f"{root} has one class ({classes[0]!r}): a classifier needs at least two class folders")
  missing = [f"{c!r} ({s})" for c in classes for s in ("train", "test")
             if not any(r.class_name == c and r.split == s for r in rows)]
  if missing:
    raise ValueError(f"no image of class {', '.join(missing)} in that split; each class needs at least one "
                     f"training and one test image (data.split={config.data.split!r}, {root})")
  n_train = sum(r.split == "train" for r in rows)
  if config.method == "finetune" and config.input.batch_size > n_train:
    raise ValueError(f"input.batch_size={config.input.batch_size} is larger than the {n_train} training images; "
                     f"use at most {n_train}")


def alignment(root, rows, classes):
  """What happened to alignment, for the report: {"aligned_by": "jfacediag.align" or None, "style", "detector",
  "per_class": {class: [images used, centre-crop fallbacks]}, "p_value": Fisher's or chi-squared test of the
  fallback rate against the class (None unless there are fallbacks), "dropped": photos left out for no face}."""
  settings = aligned_folder.settings(root)
  used = [r for r in rows if r.split not in ("skipped", "unused")]
  if not settings:
    return {"aligned_by": None, "per_class": {c: [sum(r.class_name == c for r in used), 0] for c in classes},
            "p_value": None, "dropped": 0}
  fallback = {r["output"] for r in aligned_folder.read_rows(root, aligned_folder.MANIFEST) if r.get("fallback")}
  per_class = {c: [sum(r.class_name == c for r in used), sum(r.class_name == c and r.file in fallback for r in used)]
               for c in classes}
  p_value = None
  if any(k for _, k in per_class.values()):
    from scipy import stats  # pylint: disable=g-import-not-at-top
    table = [[k, n - k] for n, k in per_class.values()]
    p_value = float(stats.fisher_exact(table)[1] if len(table) == 2 else stats.chi2_contingency(table)[1])
  dropped = sum(r.split == "skipped" and "no face" in r.reason for r in rows)
  return {"aligned_by": "jfacediag.align", "style": settings.get("style"), "detector": settings.get("detector"),
          "per_class": per_class, "p_value": p_value, "dropped": dropped}


def alignment_drops(root, classes):
  """Photos that jfacediag.align left out of `root` (no face, unreadable), as skipped manifest rows, so that the
  run's manifest and report count them; rows for a class not among `classes` are listed under their folder."""
  if not aligned_folder.settings(root):
    return []
  # --fallback center wrote a crop for a faceless photo: it is in the data (and the leakage guard skips it).
  fallback = {r["source"] for r in aligned_folder.read_rows(root, aligned_folder.MANIFEST) if r.get("fallback")}
  out = []
  for name in (aligned_folder.NO_FACE, aligned_folder.ERRORS):
    for r in aligned_folder.read_rows(root, name):
      if r["source"] in fallback or not r["source"].lower().endswith(images.IMAGE_EXTENSIONS):
        continue  # A README beside the photos, listed by an older jfacediag.align: not an image, not a drop.
      parts = r["source"].split("/")
      cls = next((p for p in parts[:-1] if p in classes), parts[0] if len(parts) > 1 else "")
      reason = (f"alignment: unreadable ({r.get('reason', '')})" if name == aligned_folder.ERRORS else
                "alignment: no face found (no_face.csv)")
      out.append(splits.Row(f"[not aligned] {r['source']}", cls, "skipped", reason))
  return out
