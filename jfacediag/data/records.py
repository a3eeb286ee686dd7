"""Aligned faces as a TFDS dataset of sharded TFRecord files, read by tf.data ops only (no Python per image).

  python -m jfacediag.build --src ALIGNED --out DIR       # DIR local, gs:// or ram://
  python -m jfacediag.train --config configs/own.py:data=DIR   # a records dataset is a data.dir like a folder

DIR holds what `tfds.builder_from_directory(DIR)` loads (dataset_info.json, features.json and the shards
`jfacediag_faces-faces.tfrecord-NNNNN-of-MMMMM`: one split, `faces`, of examples {image: the aligned PNG as written by
jfacediag.align, label, file, group, fallback}), and beside it:
- `jfacediag.json`: the classes, the alignment style, and the index: every record's file name, class, shard and
  position in its shard (so that a run splits, checks and reports a records dataset exactly as the folder);
- the aligned folder's own `align.json` and `manifest.csv` (alignment settings, centre-crop fallbacks);
- `leakage_cache.json.gz`: the leakage guard's pairs, found once at build time (the guard needs the images).

The training stream is a pure function of the step, as for a folder, but its order is a block shuffle (as TFDS's
`shuffle_files` with a per-shard shuffle): epoch e visits the shards holding training records in a permutation
seeded by (seed, e), and each shard's training records in a permutation seeded by (seed, e, shard). A shard is read
once per epoch, whole, and only the records of this process's rows of each global batch are decoded. The builder
shuffles the records across shards (seeded), so each shard is a random sample of the data.
"""
import dataclasses
import functools
import gzip
import json
import math
import os

import numpy as np

from jfacediag import fileio
from jfacediag.tf_import import tf

INDEX = "jfacediag.json"
NAME = "jfacediag_faces"
SPLIT = "faces"  # Not "all": TFDS reads that as the union of every split.
VERSION = 1


def is_records(root):
  """True when `root` is a dataset written by jfacediag.build."""
  path = os.path.join(root, INDEX)
  return fileio.exists(path) and json.loads(fileio.read_text(path)).get("kind") == "jfacediag.records"


def read_index(root):
  """The dataset's jfacediag.json, read again when the file changed (a dataset built again at the same path):
  {"classes", "layout", "style", "size", "encoding", "shards": [file names], "shard_lengths", "records": [[file,
  class, shard, position, group, fallback, folder split], ...], "rows": the folder's manifest rows in its scan
  order, [[file, class, split, reason]], "skipped": [[file, class, reason]], "leakage": whether the guard's pairs
  were found}."""
  path = os.path.join(root, INDEX)
  stat = tf().io.gfile.stat(path)
  return _read_index(root, stat.mtime_nsec, stat.length)


@functools.lru_cache(maxsize=8)
def _read_index(root, mtime_nsec, length):
  del mtime_nsec, length  # The cache key.
  index = json.loads(fileio.read_text(os.path.join(root, INDEX)))
  if index.get("version") != VERSION:
    raise ValueError(f"{root} was written by another jfacediag.build (version {index.get('version')}; this "
                     f"release reads {VERSION}): build it again")
  return index


def feature_spec():
  tf_ = tf()
  return {"image": tf_.io.FixedLenFeature([], tf_.string), "label": tf_.io.FixedLenFeature([], tf_.int64),
          "file": tf_.io.FixedLenFeature([], tf_.string), "group": tf_.io.FixedLenFeature([], tf_.int64),
          "fallback": tf_.io.FixedLenFeature([], tf_.int64)}


@dataclasses.dataclass(frozen=True)
class Located:
  """Where each of a list of files lies: shard number and position in it, numpy arrays."""
  shard: np.ndarray
  position: np.ndarray


def locate(root, files):
  index = read_index(root)
  where = {r[0]: (r[2], r[3]) for r in index["records"]}
  missing = [f for f in files if f not in where]
  if missing:
    raise ValueError(f"{len(missing)} file(s) of the split are not in the records at {root} (e.g. {missing[0]}): "
                     "the manifest belongs to another dataset")
  loc = np.array([where[f] for f in files], np.int64).reshape(-1, 2)
  return Located(loc[:, 0], loc[:, 1])


def stream_order(loc, seed, epoch):
  """Indices into the located files, in the order epoch `epoch` of the training stream visits them."""
  shards = np.unique(loc.shard)
  out = []
  for s in np.random.default_rng([seed, epoch]).permutation(shards):
    members = np.flatnonzero(loc.shard == s)
    out.append(members[np.random.default_rng([seed, epoch, int(s)]).permutation(len(members))])
  return np.concatenate(out) if out else np.zeros(0, np.int64)


def train_sample_order(loc, global_batch, seed, start_step, num_steps):
  """(file index, sample index) of every sample of steps [start_step, start_step + num_steps), as [steps, B]."""
  n = len(loc.shard)
  first, last = start_step * global_batch, (start_step + num_steps) * global_batch
  epochs = range(first // n, math.ceil(last / n))
  order = np.concatenate([stream_order(loc, seed, e) for e in epochs])
  samples = np.arange(first, last)
  return order[samples - epochs[0] * n].reshape(num_steps, global_batch), samples.reshape(num_steps, global_batch)


def _runs(root, loc, idx, *columns):
  """tf.data elements, one per run of consecutive entries of `idx` in one shard: (shard path, positions in it,
  *columns), the columns given per entry of idx, as ragged rows."""
  index = read_index(root)
  shard = loc.shard[idx]
  starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if len(idx) else np.zeros(0, np.int64)
  tf_ = tf()
  paths = np.array([os.path.join(root, index["shards"][s]) for s in shard[starts]], dtype=object)
  splits = np.r_[starts, len(idx)].astype(np.int64)

  def ragged(values):
    return tf_.RaggedTensor.from_row_splits(np.asarray(values), splits)
  return tf_.data.Dataset.from_tensor_slices((paths, ragged(loc.position[idx]), *(ragged(c) for c in columns)))


def _read():
  """flat_map body: reads a shard whole (its serialised records) and yields the records at the run's positions
  with their columns (the decoding comes after, in a parallel map)."""
  tf_ = tf()

  def fn(path, positions, *columns):
    records = tf_.data.TFRecordDataset(path).batch(1 << 30).get_single_element()
    return tf_.data.Dataset.from_tensor_slices((tf_.gather(records, positions), *columns))
  return fn


def decoder(root):
  """record -> uint8 [H, W, 3]: the PNG decoded, or the raw bytes reshaped (jfacediag.build --encoding)."""
  tf_ = tf()
  index = read_index(root)
  side, raw = index["size"], index.get("encoding") == "raw"

  def fn(record):
    data = tf_.io.parse_single_example(record, feature_spec())["image"]
    if raw:
      return tf_.reshape(tf_.io.decode_raw(data, tf_.uint8), [side, side, 3])
    img = tf_.io.decode_png(data, channels=3)
    img.set_shape([None, None, 3])
    return img
  return fn


def augment_params(cfg, seed, global_steps, batch):
  """Per-sample augmentation parameters of global steps `global_steps`, [len(steps) * batch] each, drawn in numpy
  from a generator seeded by (seed, step): a pure function of the step and of the row in the global batch.
  box: a random-resized crop (area rrc_min_area..1 of the image, aspect 3/4..4/3, the first of 10 draws that fits,
  else the whole image) as normalised [y0, x0, y1, x1]; flip; brightness delta, contrast and saturation factors."""
  out = {k: [] for k in ("box", "flip", "brightness", "contrast", "saturation")}
  s = cfg.color_jitter
  for step in global_steps:
    rng = np.random.default_rng([seed, 1, int(step)])
    area = rng.uniform(cfg.rrc_min_area, 1.0, (batch, 10))
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (batch, 10)))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    fits = (w <= 1) & (h <= 1)
    pick = np.argmax(fits, 1)
    w = np.where(fits.any(1), w[np.arange(batch), pick], 1.0)
    h = np.where(fits.any(1), h[np.arange(batch), pick], 1.0)
    y0, x0 = rng.uniform(0, 1, batch) * (1 - h), rng.uniform(0, 1, batch) * (1 - w)
    out["box"].append(np.stack([y0, x0, y0 + h, x0 + w], 1) if cfg.random_resized_crop else
                      np.tile([0.0, 0.0, 1.0, 1.0], (batch, 1)))
    out["flip"].append(rng.uniform(0, 1, batch) < 0.5 if cfg.flip else np.zeros(batch, bool))
    out["brightness"].append(rng.uniform(-s, s, batch))
    out["contrast"].append(rng.uniform(1 - s, 1 + s, batch))
    out["saturation"].append(rng.uniform(1 - s, 1 + s, batch))
  return {k: np.concatenate(v).astype(np.float32 if k != "flip" else bool) for k, v in out.items()}


def augment_batch(x, p, size, jitter):
  """The training augmentation of a batch (float32 0-255 [b, H, W, 3]) with per-sample parameters `p`: crop and
  resize to `size` (bilinear, without antialiasing: crops much larger than the network's input alias, so build the
  records at the network's size; a flip is the same crop read right to left), then brightness (added), contrast
  (about each image's channel means, brightness included) and saturation (a blend with the grey image, as
  torchvision's ColorJitter; TF's HSV saturation, which the folder path uses, costs more than the decode), clipped
  to 0-255. All in a few whole-batch ops."""
  tf_ = tf()
  b = tf_.shape(x)[0]
  h, w = tf_.cast(tf_.shape(x)[1], tf_.float32), tf_.cast(tf_.shape(x)[2], tf_.float32)
  # The box is in fractions of the image's edges; output pixel i samples the box at its centre, (i + 0.5) / size of
  # the way along (as tf.image.resize does). crop_and_resize places its first and last samples on the corners it
  # is given, in pixel-centre coordinates normalised by (side - 1); given right before left, it reads mirrored.
  box, n = p["box"], float(size)

  def corners(lo, hi, side):
    first = lo * side + 0.5 * (hi - lo) * side / n - 0.5
    last = lo * side + (n - 0.5) * (hi - lo) * side / n - 0.5
    return first / (side - 1), last / (side - 1)
  y0, y1 = corners(box[:, 0], box[:, 2], h)
  x0, x1 = corners(box[:, 1], box[:, 3], w)
  x0, x1 = tf_.where(p["flip"], x1, x0), tf_.where(p["flip"], x0, x1)
  x = tf_.image.crop_and_resize(x, tf_.stack([y0, x0, y1, x1], 1), tf_.range(b), [size, size], method="bilinear")
  if jitter > 0:
    mean = tf_.reduce_mean(x, [1, 2], keepdims=True)
    x = (x - mean) * p["contrast"][:, None, None, None] + mean + 255.0 * p["brightness"][:, None, None, None]
    grey = tf_.image.rgb_to_grayscale(x)
    x = tf_.clip_by_value(grey + (x - grey) * p["saturation"][:, None, None, None], 0.0, 255.0)
  return x


def train_batches(root, files, labels, cfg, global_batch, seed, start_step, num_steps, mine, b, size, normalise):
  """This process's part of each training batch, as pipeline.train_batches, read from the records: a tf.data
  Dataset of {"image", "label"} batches. Each record is decoded alone; the augmentation runs on whole batches
  (augment_batch), with parameters drawn per sample from the step."""
  tf_ = tf()
  loc = locate(root, files)
  file_idx, _ = train_sample_order(loc, global_batch, seed, start_step, num_steps)
  file_idx = file_idx[:, mine].reshape(-1)
  params = augment_params(cfg, seed, range(start_step, start_step + num_steps), global_batch)
  params = {k: v.reshape(num_steps, global_batch, *v.shape[1:])[:, mine].reshape(-1, *v.shape[1:])
            for k, v in params.items()}
  keys = sorted(params)
  ds = _runs(root, loc, file_idx, np.asarray(labels, np.int32)[file_idx], *(params[k] for k in keys))
  ds = ds.flat_map(_read())  # Serialised records in stream order, then decoded in parallel.
  decode = decoder(root)
  ds = ds.map(lambda r, y, *ps: (decode(r), y, *ps), num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True)

  def transform(img, y, *ps):
    x = augment_batch(tf_.cast(img, tf_.float32), dict(zip(keys, ps)), size, cfg.color_jitter)
    return {"image": normalise(x), "label": y}
  return ds.map(transform, num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True).prefetch(cfg.prefetch)


def eval_batches(root, files, labels, index, b, transform, blank, prefetch, whole=None):
  """This process's rows of padded eval batches (index -1 = padding, never read), as pipeline.eval_batches. The
  real rows are read shard by shard (each row carries its index, so their order within this process is free);
  the padding rows, which the file list holds at its end, stay last."""
  tf_ = tf()
  loc = locate(root, files)
  labels = np.asarray(labels, np.int32)
  real = index[index >= 0]
  real = real[np.lexsort((loc.position[real], loc.shard[real]))]
  ds = _runs(root, loc, real, labels[real], real).flat_map(_read())
  pad = int((index < 0).sum())
  ds = ds.concatenate(tf_.data.Dataset.from_tensor_slices(
      (tf_.constant([b""] * pad, tf_.string), np.zeros(pad, np.int32), np.full(pad, -1, np.int64))))
  decode = decoder(root)

  def element(r, y, i):
    img = tf_.cond(i >= 0, lambda: decode(r), lambda: blank)
    if whole is None:
      img = transform(tf_.cast(img, tf_.float32))
    else:
      img.set_shape(blank.shape)
    return {"image": img, "label": y, "index": i, "mask": tf_.cast(i >= 0, tf_.float32)}
  ds = ds.map(element, num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True).batch(b)
  if whole is not None:  # The crops are the network's input size: only normalised, a batch at a time.
    ds = ds.map(lambda e: {**e, "image": whole(tf_.cast(e["image"], tf_.float32))},
                num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(prefetch)


def rows(root, classes=None):
  """(layout, classes, [(file, class, split, reason)]) of a records dataset: the manifest rows its folder gave, in
  the folder's scan order (dataset.load_split makes them splits.Row)."""
  index = read_index(root)
  if classes and sorted(classes) != sorted(index["classes"]):
    raise ValueError(f"data.classes={list(classes)} does not match the classes of the records at {root}: "
                     f"{index['classes']}")
  return index["layout"], list(classes or index["classes"]), [tuple(r) for r in index["rows"]]


def leakage_pairs(root):
  """The leakage guard's pairs found at build time, or None when the dataset was built with --no-leakage."""
  if not read_index(root)["leakage"]:
    return None
  with fileio.open(leakage_cache(root), "rb") as f:
    return json.loads(gzip.decompress(f.read()))


def iter_images(root, files):
  """Yields (file, uint8 [H, W, 3]) for `files`, shard by shard (one shard in memory at a time)."""
  loc = locate(root, files)
  tf_ = tf()
  decode, shards = decoder(root), read_index(root)["shards"]
  for s in np.unique(loc.shard):
    recs = tf_.data.TFRecordDataset(os.path.join(root, shards[s])).batch(1 << 30)
    recs = recs.get_single_element()
    for k in np.flatnonzero(loc.shard == s):
      yield files[k], decode(recs[int(loc.position[k])]).numpy()


def read_images(root, files):
  """{file: uint8 [H, W, 3]} for a few files (a contact sheet's), read from their shards."""
  return dict(iter_images(root, files))


def leakage_cache(root):
  return os.path.join(root, "leakage_cache.json.gz")
