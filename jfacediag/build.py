"""python -m jfacediag.build: an aligned folder of faces as a TFDS dataset of sharded records (data/records.py).

  python -m jfacediag.build --src ALIGNED --out DIR [--shard-size 1024] [--no-leakage]
  python -m jfacediag.build --src RAW --out DIR --style arcface112     # aligns first, into a local temp folder

DIR may be local, gs://bucket/path or ram:// (TensorFlow's file systems). What it holds, and how a run reads it:
jfacediag/data/records.py. Each record keeps the aligned crop's PNG bytes as jfacediag.align wrote them (no
re-encoding), its class, its file name, its identity group (the leakage guard's clusters: same photo, same person,
duplicates) and whether it is a centre-crop fallback. Unreadable files and photos without a face are listed in
jfacediag.json (`skipped`) and counted, as a run on the folder lists them.
"""
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np

from jfacediag import base_config, cli_front, dataset, fileio, leakage, progress
from jfacediag.align import folder as aligner
from jfacediag.data import aligned_folder, records, splits
from jfacediag.tf_import import tf


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.build", description=__doc__.split("\n\n")[0])
  ap.add_argument("--src", required=True, help="a folder of class subfolders (aligned by jfacediag.align, or raw)")
  ap.add_argument("--out", required=True, help="the dataset folder: local, gs:// or ram://")
  ap.add_argument("--style", default="", help="align a raw --src in this style first (arcface112, facenet160, "
                  "vggface224, paper); an aligned --src keeps its own")
  ap.add_argument("--shard-size", type=int, default=1024, help="records per shard (default 1024)")
  ap.add_argument("--seed", type=int, default=0, help="seeds the order of the records across shards")
  ap.add_argument("--encoding", default="png", choices=("png", "raw"), help="png: the aligned PNG as written "
                  "(smaller); raw: uint8 pixels (several times larger, no decoding; docs/data.md has both)")
  ap.add_argument("--no-leakage", action="store_true", help="skip the leakage guard (no identity groups)")
  return ap.parse_args(argv)


def _image_bytes(path, encoding):
  if encoding == "png":
    with open(path, "rb") as f:
      return f.read()
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  return np.ascontiguousarray(img[..., ::-1]).tobytes()  # RGB, row-major, as records.decoder reshapes it.


def _write_shards(out, src, entries, shard_size, encoding):
  """Writes the records; returns (shard file names, shard lengths, total bytes)."""
  tf_ = tf()
  n = max(1, -(-len(entries) // shard_size))
  names = [f"{records.NAME}-{records.SPLIT}.tfrecord-{k:05d}-of-{n:05d}" for k in range(n)]
  lengths, total = [], 0
  bar = progress.bar(range(n), total=n, desc="write", unit="shard", every_fraction=0.1)
  for k in bar:
    chunk = entries[k * shard_size:(k + 1) * shard_size]
    with tf_.io.TFRecordWriter(os.path.join(out, names[k])) as w:
      for e in chunk:
        data = _image_bytes(os.path.join(src, e["file"]), encoding)
        feature = {"image": tf_.train.Feature(bytes_list=tf_.train.BytesList(value=[data])),
                   "label": tf_.train.Feature(int64_list=tf_.train.Int64List(value=[e["label"]])),
                   "file": tf_.train.Feature(bytes_list=tf_.train.BytesList(value=[e["file"].encode()])),
                   "group": tf_.train.Feature(int64_list=tf_.train.Int64List(value=[e["group"]])),
                   "fallback": tf_.train.Feature(int64_list=tf_.train.Int64List(value=[int(e["fallback"])]))}
        data = tf_.train.Example(features=tf_.train.Features(feature=feature)).SerializeToString()
        w.write(data)
        total += len(data)
    lengths.append(len(chunk))
  return names, lengths, total


def _tfds_metadata(out, names, classes, size, lengths, num_bytes, encoding):
  """dataset_info.json and features.json, so that tfds.builder_from_directory(out) loads the shards. TFDS writes
  them through etils, which knows local paths and gs:// but not every TensorFlow file system (ram://): they are
  written locally, then copied through TensorFlow's."""
  with tempfile.TemporaryDirectory(prefix="jfacediag-tfds-") as tmp:
    for name in names:  # TFDS looks for the shards' names (check_data=False: it does not read them).
      open(os.path.join(tmp, name), "wb").close()
    _write_tfds_metadata(tmp, classes, size, lengths, num_bytes, encoding)
    for name in sorted(set(os.listdir(tmp)) - set(names)):
      tf().io.gfile.copy(os.path.join(tmp, name), os.path.join(out, name), overwrite=True)


def _write_tfds_metadata(out, classes, size, lengths, num_bytes, encoding):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  image = (tfds.features.Image(shape=(size, size, 3), encoding_format="png") if encoding == "png" else
           tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES))
  features = tfds.features.FeaturesDict({
      "image": image,
      "label": tfds.features.ClassLabel(names=classes),
      "file": tfds.features.Text(),
      "group": tfds.features.Scalar(np.int64),
      "fallback": tfds.features.Scalar(np.int64)})
  split = tfds.core.SplitInfo(name=records.SPLIT, shard_lengths=lengths, num_bytes=num_bytes,
                              filename_template=tfds.core.ShardedFileTemplate(
                                  data_dir=out, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                                  dataset_name=records.NAME, split=records.SPLIT, filetype_suffix="tfrecord"))
  tfds.folder_dataset.write_metadata(
      data_dir=out, features=features, split_infos=[split], version="1.0.0", check_data=False,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      description="Aligned face crops written by python -m jfacediag.build (jfacediag.json: the index).")


def build(src, out, style="", shard_size=1024, seed=0, leakage_check=True, encoding="png"):
  """Writes the dataset; returns its jfacediag.json dict."""
  t0 = time.perf_counter()
  src = os.path.abspath(os.path.expanduser(src))
  if not os.path.isdir(src):
    raise FileNotFoundError(f"--src {src} is not a folder")
  out = fileio.absolute(out)
  if fileio.exists(os.path.join(out, records.INDEX)):
    raise ValueError(f"{out} already holds a dataset; remove it or choose another --out")
  if shard_size < 1:
    raise ValueError(f"--shard-size must be >= 1; got {shard_size}")
  tmp, origin = None, src
  if not aligned_folder.settings(src):
    if not style:
      raise ValueError(f"{src} was not aligned by jfacediag.align (no align.json): pass --style to align it first, "
                       "or align it with python -m jfacediag.align")
    tmp = tempfile.mkdtemp(prefix="jfacediag-build-")
    aligner.align(src, os.path.join(tmp, "aligned"), aligner.Options(style=style, fallback="center"))
    src = os.path.join(tmp, "aligned")
  try:
    return _build(src, out, shard_size, seed, leakage_check, encoding, t0, origin)
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def _build(src, out, shard_size, seed, leakage_check, encoding, t0, origin):
  settings = aligned_folder.settings(src)
  layout, classes, rows = splits.scan(src)
  rows += dataset.alignment_drops(src, classes)  # As a run on the folder lists them, in the same order.
  usable = [r for r in rows if r.split != "skipped"]
  skipped = [[r.file, r.class_name, r.reason] for r in rows if r.split == "skipped"]
  fallback = {r["output"] for r in aligned_folder.read_rows(src, aligned_folder.MANIFEST) if r.get("fallback")}
  found, group_of = None, {}
  fileio.makedirs(out)
  if leakage_check:
    lcfg = base_config.get_config().leakage
    cache = records.leakage_cache(out)
    found = leakage.find_pairs_cached(src, [r.file for r in usable], lcfg, None, True,
                                      classes=[r.class_name for r in usable])
    with fileio.open(cache, "wb") as f:
      f.write(gzip.compress(json.dumps(found).encode()))
    group_of = leakage.groups([r.file for r in usable], found, leakage.GROUP_KINDS["identity"])
  ids = {g: k for k, g in enumerate(sorted(set(group_of.values())))}
  entries = [{"file": r.file, "class": r.class_name, "label": classes.index(r.class_name), "split": r.split,
              "group": ids.get(group_of.get(r.file), -1), "fallback": r.file in fallback} for r in usable]
  entries = [entries[i] for i in np.random.default_rng(seed).permutation(len(entries))]
  size = settings.get("size") or _side(src, entries)
  if encoding == "raw":
    _check_sides(src, entries, size)
  names, lengths, num_bytes = _write_shards(out, src, entries, shard_size, encoding)
  _tfds_metadata(out, names, classes, size, lengths, num_bytes, encoding)
  for name in (aligned_folder.INFO, aligned_folder.MANIFEST):  # Alignment settings and fallbacks, for the report.
    if os.path.exists(os.path.join(src, name)):
      fileio.write_text(os.path.join(out, name), open(os.path.join(src, name), encoding="utf-8").read())
  positions = [(k, p) for k, n in enumerate(lengths) for p in range(n)]
  index = {"kind": "jfacediag.records", "version": records.VERSION, "source": origin, "layout": layout,
           "classes": classes, "style": settings.get("style"), "size": size, "encoding": encoding, "shards": names,
           "shard_lengths": lengths, "num_bytes": num_bytes, "seed": seed, "leakage": bool(leakage_check),
           "records": [[e["file"], e["class"], s, p, e["group"], int(e["fallback"]), e["split"]]
                       for e, (s, p) in zip(entries, positions)],
           "rows": [[r.file, r.class_name, r.split, r.reason] for r in rows],  # The folder's scan order.
           "skipped": skipped}
  fileio.write_text(os.path.join(out, records.INDEX), json.dumps(index))
  print(f"Wrote {len(entries)} faces of {len(classes)} classes ({', '.join(classes)}) into {len(names)} shard(s) "
        f"at {out}: {num_bytes / 2**20:.1f} MiB, {settings.get('style')} crops of {size} px; {len(skipped)} file(s) "
        f"skipped (listed in {records.INDEX}); {time.perf_counter() - t0:.1f} s.", flush=True)
  return index


def _check_sides(src, entries, size):
  """Raw records are reshaped to size x size x 3: every crop must be that size (jfacediag.align writes them so)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for e in entries:
    with Image.open(os.path.join(src, e["file"])) as im:
      if im.size != (size, size):
        raise ValueError(f"--encoding raw needs crops of one size; {e['file']} is {im.size[0]}x{im.size[1]}, not "
                         f"{size}x{size} (use --encoding png)")


def _side(src, entries):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(os.path.join(src, entries[0]["file"])) as im:
    return im.size[0]


def main(argv=None):
  args = parse(argv)
  return cli_front.one_line_errors(build, args.src, args.out, args.style, args.shard_size, args.seed,
                                   not args.no_leakage, args.encoding)


if __name__ == "__main__":
  sys.exit(main())
