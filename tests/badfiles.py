"""Writes the awkward files every real face folder eventually holds."""
import io
import os

import numpy as np
from PIL import Image

UNREADABLE = {"zero_bytes.jpg": "empty file", "truncated.jpg": "corrupt or truncated",
              "not_an_image.jpg": "not an image"}
READABLE = ("cmyk.jpg", "sixteen_bit.png", "alpha.png", "exif_rotated.jpg", "grayscale.png", "ñandú_éå 名字.png")


def write_all(folder, seed=0):
  """Writes UNREADABLE and READABLE files into `folder`; returns their names."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
  open(os.path.join(folder, "zero_bytes.jpg"), "wb").close()
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="JPEG")
  with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
  with open(os.path.join(folder, "not_an_image.jpg"), "w", encoding="utf-8") as f:
    f.write("this is a text file, not a JPEG\n")
  Image.fromarray(rgb).convert("CMYK").save(os.path.join(folder, "cmyk.jpg"), format="JPEG")
  Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)).save(
      os.path.join(folder, "sixteen_bit.png"))
  alpha = np.dstack([rgb, np.full((40, 60), 128, np.uint8)])
  Image.fromarray(alpha, "RGBA").save(os.path.join(folder, "alpha.png"))
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 CW to display.
  Image.fromarray(rgb).save(os.path.join(folder, "exif_rotated.jpg"), format="JPEG", exif=exif)
  Image.fromarray(rgb[..., 0], "L").save(os.path.join(folder, "grayscale.png"))
  Image.fromarray(rgb).save(os.path.join(folder, READABLE[-1]))
  return list(UNREADABLE), list(READABLE)
