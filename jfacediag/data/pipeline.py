"""tf.data input pipelines: a deterministic, resumable training stream and padded, masked evaluation batches.

Training is one stream of samples: the epoch-e permutation of the training files (seeded by (seed, e)) follows
epoch e-1's, and consecutive global batches are cut from it, so no image is skipped at epoch ends. Sample g of the
stream is augmented with stateless ops seeded by (seed, g). The stream is therefore a pure function of the step:
resuming at step s rebuilds it from sample s * global_batch, with no iterator state to save.

Every process reads only its slice of each global batch (batch rows [p*b, (p+1)*b) for process p, b = B / P);
`sharding.global_batch` reassembles them on the device mesh.
"""
import math
import os

import jax
import numpy as np

from jfacediag.data import images, records
from jfacediag.tf_import import tf


def _decode(root):
  def load(path):
    path = os.path.join(root, os.fsdecode(path))
    try:
      return images.load_rgb(path)
    except images.UnreadableImage as e:  # The scan accepted it: the file changed since. Say which one.
      raise RuntimeError(f"{path}: {e} (it was readable when the manifest was written)") from e

  def fn(path):
    img = tf().numpy_function(load, [path], tf().uint8, stateful=False)
    img.set_shape([None, None, 3])
    return img
  return fn


def _resize_shorter(img, size):
  tf_ = tf()
  shape = tf_.cast(tf_.shape(img)[:2], tf_.float32)
  scale = size / tf_.reduce_min(shape)
  new = tf_.cast(tf_.round(shape * scale), tf_.int32)
  new = tf_.maximum(new, size)
  return tf_.image.resize(img, new, method="bilinear", antialias=True)


def _centre_crop(img, size):
  tf_ = tf()
  h, w = tf_.shape(img)[0], tf_.shape(img)[1]
  top, left = (h - size) // 2, (w - size) // 2
  return img[top:top + size, left:left + size]


def _normalise(img, pp):
  """float32 RGB 0-255 -> the backbone's input: channel order, then (x - mean) / std."""
  if pp.channel_order == "BGR":
    img = img[..., ::-1]
  return (img - np.array(pp.mean, np.float32)) / np.array(pp.std, np.float32)


def _eval_transform(pp):
  def fn(img):
    img = _resize_shorter(img, pp.resize_size)
    img = _centre_crop(img, pp.input_size)
    img.set_shape([pp.input_size, pp.input_size, 3])
    return _normalise(img, pp)
  return fn


def _train_transform(pp, cfg, seed):
  """cfg = config.input; augmentations are stateless, seeded by (seed, sample index)."""
  tf_ = tf()

  def fn(img, sample):
    seeds = tf_.random.experimental.stateless_split(tf_.stack([tf_.cast(seed, tf_.int64), sample]), 5)
    img = _resize_shorter(img, pp.resize_size)
    if cfg.random_resized_crop:
      begin, size, _ = tf_.image.stateless_sample_distorted_bounding_box(
          tf_.shape(img), bounding_boxes=tf_.zeros([1, 0, 4]), seed=seeds[0], min_object_covered=0.0,
          aspect_ratio_range=(3 / 4, 4 / 3), area_range=(cfg.rrc_min_area, 1.0), max_attempts=10,
          use_image_if_no_bounding_boxes=True)
      img = tf_.slice(img, begin, size)
      img = tf_.image.resize(img, [pp.input_size, pp.input_size], method="bilinear", antialias=True)
    else:
      img = _centre_crop(img, pp.input_size)
    img.set_shape([pp.input_size, pp.input_size, 3])
    if cfg.flip:
      img = tf_.image.stateless_random_flip_left_right(img, seeds[1])
    if cfg.color_jitter > 0:
      s = cfg.color_jitter
      img = img / 255.0
      img = tf_.image.stateless_random_brightness(img, s, seeds[2])
      img = tf_.image.stateless_random_contrast(img, 1 - s, 1 + s, seeds[3])
      img = tf_.image.stateless_random_saturation(img, 1 - s, 1 + s, seeds[4])
      img = tf_.clip_by_value(img, 0.0, 1.0) * 255.0
    return _normalise(img, pp)
  return fn


def _process_slice(global_batch):
  n, p = jax.process_count(), jax.process_index()
  if global_batch % n:
    raise ValueError(f"batch size {global_batch} does not divide by the {n} processes")
  b = global_batch // n
  return b, slice(p * b, (p + 1) * b)


def train_sample_order(num_files, global_batch, seed, start_step, num_steps):
  """(file index, sample index) of every sample of steps [start_step, start_step + num_steps), as [steps, B]."""
  first, last = start_step * global_batch, (start_step + num_steps) * global_batch
  epochs = range(first // num_files, math.ceil(last / num_files))
  files = np.concatenate([np.random.default_rng([seed, e]).permutation(num_files) for e in epochs])
  offset = epochs[0] * num_files
  samples = np.arange(first, last)
  return (files[samples - offset].reshape(num_steps, global_batch),
          samples.reshape(num_steps, global_batch))


def train_batches(root, files, labels, pp, cfg, global_batch, seed, start_step, num_steps):
  """Yields this process's part of each training batch: {"image": [b,S,S,3] float32, "label": [b] int32}."""
  b, mine = _process_slice(global_batch)
  if num_steps <= 0:  # A finished run, resumed to re-evaluate.
    return iter(())
  if root and records.is_records(root):  # TFRecord shards: a block-shuffled stream, decoded by TensorFlow.
    return records.train_batches(root, files, labels, cfg, global_batch, seed, start_step, num_steps, mine, b,
                                 pp.input_size, lambda x: _normalise(x, pp)).as_numpy_iterator()
  file_idx, sample_idx = train_sample_order(len(files), global_batch, seed, start_step, num_steps)
  file_idx, sample_idx = file_idx[:, mine].reshape(-1), sample_idx[:, mine].reshape(-1)
  tf_ = tf()
  paths = np.array([os.fsencode(f) for f in files], dtype=object)
  ds = tf_.data.Dataset.from_tensor_slices((paths[file_idx], labels[file_idx], sample_idx.astype(np.int64)))
  decode, transform = _decode(root), _train_transform(pp, cfg, seed)
  ds = ds.map(lambda p, y, s: {"image": transform(tf_.cast(decode(p), tf_.float32), s), "label": y},
              num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(cfg.prefetch)
  return ds.as_numpy_iterator()


def eval_batches(root, files, labels, pp, global_batch, prefetch=2):
  """Yields this process's part of padded eval batches: image, label, index (into files) and mask (0 = padding).

  The file list is padded up to a multiple of the global batch with black images (nothing is decoded for them);
  padded rows have mask 0 and index -1, so nothing is dropped and nothing is counted twice.
  """
  b, mine = _process_slice(global_batch)
  n = len(files)
  steps = max(1, math.ceil(n / global_batch))
  index = np.full(steps * global_batch, -1, np.int64)
  index[:n] = np.arange(n)
  index = index.reshape(steps, global_batch)[:, mine].reshape(-1)
  tf_ = tf()
  if root and records.is_records(root):
    side = records.read_index(root)["size"]
    whole = (lambda x: _normalise(x, pp)) if side == pp.input_size == pp.resize_size else None
    blank = tf_.zeros([side if whole else pp.input_size] * 2 + [3], tf_.uint8)
    return steps, records.eval_batches(root, files, labels, index, b, _eval_transform(pp), blank, prefetch,
                                       whole).as_numpy_iterator()
  paths = np.array([os.fsencode(f) for f in files], dtype=object)
  safe = np.maximum(index, 0)
  ds = tf_.data.Dataset.from_tensor_slices((paths[safe], labels[safe], index))
  decode, transform = _decode(root), _eval_transform(pp)
  blank = tf_.zeros([pp.input_size, pp.input_size, 3], tf_.uint8)  # Padding rows are never decoded.
  ds = ds.map(lambda p, y, i: {"image": transform(tf_.cast(tf_.cond(i >= 0, lambda: decode(p), lambda: blank),
                                                           tf_.float32)),
                               "label": y, "index": i, "mask": tf_.cast(i >= 0, tf_.float32)},
              num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(b).prefetch(prefetch)
  return steps, ds.as_numpy_iterator()
