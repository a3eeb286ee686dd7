r"""Embeddings of face images from any registered backbone's feature layer, batched and jit-compiled.

  python -m jfacediag.embed --weights builtin:sface --images photos/ --out feats.npz --align arcface112
  python -m jfacediag.embed --weights weights/iresnet50-ms1mv3 --images a.jpg b.jpg --out feats.npz

feats.npz holds `embeddings` [n, d] (float32, not normalised), `files` (the n inputs they belong to, in order),
`no_face` (inputs where --align found no face) and `errors` / `error_reasons` (unreadable inputs). Nothing is
dropped silently: every input is in exactly one of files, no_face and errors, and the summary says how many.
"""
import argparse
import os
import sys
import tempfile

import cv2
import jax
import numpy as np
from PIL import Image

from jfacediag import builtin, cli_front, cpu, models, progress, sharding, steps
from jfacediag.data import aligned_folder, images
from jfacediag.models import weights


class Embedder:
  """A converted backbone's feature layer on arrays of aligned crops, jit-compiled once, on every device.

  `weights` is builtin:NAME or a weights directory. `__call__(crops)` takes uint8 RGB crops [n, S, S, 3] (resized to
  the input side when S differs) and returns float32 [n, d], in batches padded to a multiple of the device count.
  """

  def __init__(self, weights_spec, batch=64):
    variables, meta, self.pp = weights.load(builtin.resolve(weights_spec))
    self.spec = models.get(meta["arch"])
    self.mesh = sharding.make_mesh()
    n = jax.device_count()
    self.batch = max(n, batch // n * n)
    module = self.spec.make()
    self._fn = cpu.jit(lambda v, x: module.apply(v, x), out_shardings=sharding.replicated(self.mesh))
    self._vars = jax.device_put({"params": variables["params"], "batch_stats": variables["batch_stats"]},
                                sharding.replicated(self.mesh))

  def normalise(self, crops):
    pp, s = self.pp, self.pp.input_size
    x = np.stack([c if c.shape[:2] == (s, s) else cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA)
                  for c in crops]).astype(np.float32)
    if pp.channel_order == "BGR":
      x = x[..., ::-1]
    return (x - np.array(pp.mean, np.float32)) / np.array(pp.std, np.float32)

  def __call__(self, crops):
    out = np.zeros((len(crops), self.spec.feature_dim), np.float32)
    for i in range(0, len(crops), self.batch):
      x = self.normalise(crops[i:i + self.batch])
      pad = np.zeros((self.batch,) + x.shape[1:], np.float32)
      pad[:len(x)] = x
      # Every process holds the whole batch; each puts the rows of its own devices (multi-process safe).
      batch = jax.make_array_from_callback(pad.shape, sharding.batch_sharding(self.mesh), lambda idx, pad=pad: pad[idx])
      out[i:i + len(x)] = np.asarray(jax.device_get(self._fn(self._vars, batch)))[:len(x)]
    return out


def parse(argv):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.embed", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--weights", required=True, help="builtin:sface or a converted weights directory")
  ap.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
  ap.add_argument("--out", required=True, help="output .npz")
  ap.add_argument("--align", default="", help="align first in this style (e.g. arcface112); default: as given")
  ap.add_argument("--detector", default="yunet", choices=("yunet", "mtcnn"))
  ap.add_argument("--mtcnn-weights", default="")
  ap.add_argument("--batch", type=int, default=32)
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def run(args, quiet=False):
  """Embeds args.images into args.out; quiet: no progress bar or per-file listing (the caller reports)."""
  variables, meta, pp = weights.load(builtin.resolve(args.weights))
  spec = models.get(meta["arch"])
  files = images.expand(args.images)
  if args.align or any(os.path.isdir(p) and aligned_folder.settings(p) for p in args.images):
    pp = pp.for_crops()  # Aligned crops are the network's input: not cropped a second time.
  usable, errors, reasons, no_face = [], [], [], []
  with tempfile.TemporaryDirectory() as tmp:
    det = None
    if args.align:
      from jfacediag.align import detectors, styles  # pylint: disable=g-import-not-at-top
      det = detectors.make(args.detector, args.mtcnn_weights)
    for i, f in enumerate(progress.bar(files, desc="read" + (" + align" if det else ""), unit="img", leave=False,
                               disable=quiet)):
      if not f.lower().endswith(images.IMAGE_EXTENSIONS):
        errors.append(f), reasons.append("not an image file extension")
        continue
      try:
        img = images.load_rgb(f)
      except images.UnreadableImage as e:
        errors.append(f), reasons.append(str(e))
        continue
      if det is None:
        usable.append((f, f))
        continue
      faces = det.detect(img)
      if not faces:
        no_face.append(f)
        continue
      face = detectors.largest(faces)
      crop, _ = styles.align(img, face, args.align, pp.input_size)
      path = os.path.join(tmp, f"{i:07d}.png")
      Image.fromarray(crop).save(path)
      usable.append((f, path))
    mesh = sharding.make_mesh()
    batch = max(jax.device_count(), args.batch // jax.device_count() * jax.device_count())
    module = spec.make()
    fn = cpu.jit(lambda v, x, idx: (module.apply(v, x), idx), out_shardings=sharding.replicated(mesh))
    model_vars = jax.device_put({"params": variables["params"], "batch_stats": variables["batch_stats"]},
                                sharding.replicated(mesh))
    emb = steps.run_batches(fn, model_vars, "", [p for _, p in usable], np.zeros(len(usable), np.int32), pp, batch,
                            mesh, spec.feature_dim) if usable else np.zeros((0, spec.feature_dim), np.float32)
  np.savez(args.out, embeddings=emb, files=np.array([f for f, _ in usable], dtype=str),
           no_face=np.array(no_face, dtype=str), errors=np.array(errors, dtype=str),
           error_reasons=np.array(reasons, dtype=str), arch=spec.name, weights=args.weights)
  if quiet:
    return emb
  print(f"{len(usable)} embeddings ({spec.name}, {spec.feature_dim}-d) -> {args.out}; no face: {len(no_face)}; "
        f"unreadable: {len(errors)}" + "".join(f"\n  no face: {f}" for f in no_face)
        + "".join(f"\n  unreadable: {f}: {r}" for f, r in zip(errors, reasons)), flush=True)
  return emb


def main(argv=None):
  return cli_front.one_line_errors(run, parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  sys.exit(main())
