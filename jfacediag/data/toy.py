"""A generated image folder whose classes differ visibly (shape and colour), for the toy config and the tests."""
import os

import numpy as np
from PIL import Image, ImageDraw

# (name, shape, colour): both the shape and the dominant colour differ between classes.
CLASSES = (("a_circle", "circle", (220, 40, 40)), ("b_square", "square", (40, 180, 40)),
           ("c_triangle", "triangle", (40, 60, 220)), ("d_cross", "cross", (220, 200, 30)))


def _draw(rng, shape, colour, size):
  bg = rng.integers(90, 170, size=3)
  arr = np.clip(bg + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
  img = Image.fromarray(arr)
  d = ImageDraw.Draw(img)
  r = size * rng.uniform(0.22, 0.34)
  cx, cy = rng.uniform(r, size - r, size=2)
  col = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
  if shape == "circle":
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
  elif shape == "square":
    d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=col)
  elif shape == "triangle":
    d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
  else:
    w = r / 3
    d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=col)
    d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=col)
  return img


def make_folder(root, num_classes=3, per_class=60, size=64, seed=0, ext=".png"):
  """Writes root/<class>/<i><ext> and returns the class names. Existing files are kept (idempotent)."""
  if not 2 <= num_classes <= len(CLASSES):
    raise ValueError(f"num_classes={num_classes}; the toy generator has 2..{len(CLASSES)} classes")
  rng = np.random.default_rng(seed)
  names = []
  for name, shape, colour in CLASSES[:num_classes]:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      img = _draw(rng, shape, colour, size)  # Drawn even when the file exists, so the rng stream stays fixed.
      path = os.path.join(root, name, f"{i:04d}{ext}")
      if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"  # Processes sharing a file system may generate it at once.
        img.save(tmp, format=Image.registered_extensions()[ext])
        os.replace(tmp, path)
    names.append(name)
  return names
