"""The demo's real labelled set: scikit-image's LFW subset, written out as photos and aligned with jfacediag.align.

What it is: 200 real grey images of 25x25 pixels shipped inside the scikit-image wheel (`skimage.data.lfw_subset`,
no download): 100 face crops from Labeled Faces in the Wild and 100 non-face patches. The task is face vs non-face.
What it is not: a diagnosis task, or a hard one. Fine-tuned SFace separates these classes perfectly, and the face
detector used for alignment nearly does on its own (it finds a face in all 100 faces and in 1 of the non-faces;
`--fallback center` gives the other 99 a centre crop), so the processing path itself differs by class.
The demo shows that the whole pipeline works on real faces offline (alignment, real face-recognition weights,
DTL2 and DTL1, the report with its intervals); it says nothing about facial diagnosis.

Each image is upsampled 4x (bicubic, to 100x100, grey replicated to RGB) so that YuNet can find the landmarks, then
aligned with the arcface112 template.
"""
import os

import numpy as np
from PIL import Image

CLASSES = ("face", "non_face")
UPSAMPLE = 4


def _load():
  try:
    from skimage import data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the demo data set comes from scikit-image's LFW subset: pip install scikit-image") from e
  x = data.lfw_subset()
  if x.shape != (200, 25, 25):
    raise ValueError(f"skimage.data.lfw_subset() has shape {x.shape}; expected (200, 25, 25)")
  return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def write_photos(root):
  """Writes root/{face,non_face}/NNN.png (100 each); existing files are kept. Returns root."""
  x = _load()
  for c, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(100):
      path = os.path.join(root, name, f"{i:03d}.png")
      if not os.path.exists(path):
        img = Image.fromarray(x[100 * c + i]).convert("RGB")
        img.resize((25 * UPSAMPLE, 25 * UPSAMPLE), Image.BICUBIC).save(path)
  return root
