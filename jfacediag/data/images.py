"""Reading one image file into an RGB uint8 array, or saying exactly why it cannot be read.

PIL does the decoding (TensorFlow's decoders ignore EXIF orientation and reject some CMYK and 16-bit files), both
when a folder is scanned and inside the tf.data pipeline, so what the scan accepts is what training reads.
"""
import os

import numpy as np
from PIL import Image, ImageOps

from jfacediag.data import aligned_folder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class UnreadableImage(ValueError):
  """A file that is not a decodable image; the message is the reason shown in the report."""


# Images with more pixels are refused before they are decoded (a 10000x10000 photo costs 3.4 GB per decode, and a
# face needs no such size). The trainer sets it from config.data.max_megapixels.
MAX_PIXELS = 50_000_000


def _to_rgb(img):
  """Any PIL mode to 8-bit RGB: 16-bit and 32-bit grey rescaled, float images in 0..1 scaled by 255, alpha
  composited onto black, CMYK converted."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if img.mode == "F" and finite.size and finite.min() >= 0 and finite.max() <= 1.0:
      top = 1.0  # A float image in 0..1 (scientific TIFF): white is 1.0, not 255.
    else:
      top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    arr = np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.stack([arr] * 3, axis=-1)
  if img.mode == "P":
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
  if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    img = Image.alpha_composite(black, rgba)
  return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_rgb(path):
  """Returns the image at `path` as an (H, W, 3) uint8 RGB array, upright per its EXIF orientation.

  Raises UnreadableImage with a short reason for empty, truncated, corrupt or non-image files.
  """
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise UnreadableImage(f"cannot stat file: {e.strerror}") from e
  if size == 0:
    raise UnreadableImage("empty file (0 bytes)")
  try:
    with Image.open(path) as img:
      if img.size[0] * img.size[1] > MAX_PIXELS:
        raise UnreadableImage(f"{img.size[0]}x{img.size[1]} pixels ({img.size[0] * img.size[1] / 1e6:.0f} "
                              f"megapixels) exceed data.max_megapixels={MAX_PIXELS / 1e6:g}: refused before decoding; "
                              "downscale it, or raise the limit")
      img.load()  # Forces the full decode: truncated files fail here, not later inside the pipeline.
      img = ImageOps.exif_transpose(img)
      arr = _to_rgb(img)
  except Image.UnidentifiedImageError as e:
    raise UnreadableImage("not an image (no decoder recognises its contents)") from e
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UnreadableImage(f"corrupt or truncated image ({e})") from e
  if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise UnreadableImage(f"image has no pixels (shape {arr.shape})")
  return arr


def check(path):
  """Returns None when `path` decodes, else the reason it does not."""
  try:
    load_rgb(path)
  except UnreadableImage as e:
    return str(e)
  return None


def expand(paths):
  """Files and folders -> the files, folders walked in sorted order; hidden files and an aligned folder's own
  bookkeeping (align.json, manifest.csv, no_face.csv, errors.csv beside align.json) skipped; nothing else dropped."""
  out = []
  for p in paths:
    if os.path.isdir(p):
      for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        skip = aligned_folder.BOOKKEEPING if aligned_folder.INFO in filenames else ()
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and f not in skip]
    else:
      out.append(p)
  return out
