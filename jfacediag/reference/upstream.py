"""The upstream code itself, run beside jfacediag: facenet-pytorch's MTCNN, insightface's norm_crop and cydonia999's
VGGFace2 crop, for the fidelity tests and `tools/compare_upstream.py`.

Nothing here is a re-implementation of the algorithms being checked:
- facenet-pytorch 2.6.0 cannot be installed beside this stack (it pins torch<2.3, numpy<2), but its wheel can be
  downloaded (`pip download facenet-pytorch==2.6.0 --no-deps`). `facenet_mtcnn(wheel)` imports the wheel's own
  `models/mtcnn.py` and `models/utils/detect_face.py` (with its pnet/rnet/onet.pt) unchanged. The one piece it
  needs from torchvision, whose compiled ops do not load beside torch 2.13, is `torchvision.ops.boxes.batched_nms`:
  `batched_nms` below stands in for it, written from torchvision's own source (ops/boxes.py and
  csrc/ops/cpu/nms_kernel.cpp): the same `scores.sort(0, descending=True)` call, the same float32 IoU, the same
  `> threshold` test, and the same switch between the coordinate trick and the per-class loop at 4000 numbers.
- insightface's `utils/face_align.py` ships in its sdist (`pip download insightface==2.1 --no-deps
  --no-binary :all:`) and needs only cv2, numpy and scikit-image: `insightface_face_align(sdist)` imports it.
- cydonia999/VGGFace2-pytorch feeds `torchvision.transforms.Resize(256)` then `CenterCrop(224)` of PIL images
  (`datasets/vgg_face2.py`). `torchvision_resize_centre_crop` is those two transforms' PIL path, written from
  torchvision's transforms/functional.py (`_compute_resized_output_size`, `center_crop`'s rounding) and
  functional_pil.py (`img.resize(size[::-1], BILINEAR)`).

Needs torch (`pip install -e ".[dev]"`) for facenet-pytorch.
"""
import importlib.util
import os
import sys
import tarfile
import types
import zipfile

import numpy as np
from PIL import Image

from jfacediag.convert import cli as convert_cli

FACENET_WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"
INSIGHTFACE_SDIST = "insightface-2.1.tar.gz"


# == torchvision stand-ins =============================================================================================
def _nms(boxes, scores, threshold):
  """torchvision::nms on CPU (csrc/ops/cpu/nms_kernel.cpp), in float32 like its scalar_t loop."""
  import torch  # pylint: disable=g-import-not-at-top
  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64)
  order = scores.sort(0, descending=True)[1].numpy()
  b = boxes.numpy().astype(np.float32)
  x1, y1, x2, y2 = b.T
  areas = (x2 - x1) * (y2 - y1)
  suppressed = np.zeros(len(b), bool)
  keep = []
  for _i, i in enumerate(order):
    if suppressed[i]:
      continue
    keep.append(i)
    rest = order[_i + 1:]
    rest = rest[~suppressed[rest]]
    w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
    h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
    inter = w * h
    suppressed[rest[inter / (areas[i] + areas[rest] - inter) > threshold]] = True
  return torch.as_tensor(np.array(keep, np.int64))


def batched_nms(boxes, scores, idxs, iou_threshold):
  """torchvision.ops.boxes.batched_nms (ops/boxes.py): the coordinate trick up to 4000 numbers on CPU, else a loop
  over classes with the kept indices re-sorted by score."""
  import torch  # pylint: disable=g-import-not-at-top
  if boxes.numel() > 4000:
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
      curr = torch.where(idxs == class_id)[0]
      keep_mask[curr[_nms(boxes[curr], scores[curr], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64)
  offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
  return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _to_tensor(pic):
  """torchvision.transforms.functional.to_tensor of an HxWxC ndarray: CHW, divided by 255 only for uint8."""
  import torch  # pylint: disable=g-import-not-at-top
  img = torch.from_numpy(np.ascontiguousarray(np.asarray(pic).transpose(2, 0, 1)))
  return img.float().div(255) if img.dtype == torch.uint8 else img


def _stub_torchvision():
  """Module objects for what facenet-pytorch imports from torchvision; returned, not left in sys.modules."""
  tv = types.ModuleType("torchvision")
  transforms = types.ModuleType("torchvision.transforms")
  functional = types.ModuleType("torchvision.transforms.functional")
  ops, boxes = types.ModuleType("torchvision.ops"), types.ModuleType("torchvision.ops.boxes")
  functional.to_tensor = _to_tensor
  boxes.batched_nms = batched_nms
  tv.transforms, transforms.functional, tv.ops, ops.boxes = transforms, functional, ops, boxes
  return {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
          "torchvision.ops": ops, "torchvision.ops.boxes": boxes}


# == facenet-pytorch ===================================================================================================
def extract(archive, dest):
  marker = os.path.join(dest, ".extracted")
  if not os.path.exists(marker):
    os.makedirs(dest, exist_ok=True)
    if archive.endswith(".whl"):
      with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    else:
      with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    open(marker, "w", encoding="utf-8").close()
  return dest


def facenet_mtcnn(wheel, workdir, **kw):
  """facenet-pytorch's own `MTCNN(**kw)` (eval mode, CPU), imported from the downloaded wheel."""
  root = extract(wheel, os.path.join(workdir, "facenet_pytorch-2.6.0"))
  name = "_upstream_facenet_pytorch"  # Private name: never shadows an installed facenet_pytorch.
  if f"{name}.models.mtcnn" not in sys.modules:
    saved = {k: sys.modules.get(k) for k in _stub_torchvision()}
    sys.modules.update(_stub_torchvision())
    try:
      pkg = types.ModuleType(name)
      pkg.__path__ = [os.path.join(root, "facenet_pytorch")]  # The package's __init__ (training, download) is skipped.
      sys.modules[name] = pkg
      importlib.import_module(f"{name}.models.mtcnn")
    finally:
      for k, v in saved.items():
        if v is None:
          sys.modules.pop(k, None)
        else:
          sys.modules[k] = v
  return sys.modules[f"{name}.models.mtcnn"].MTCNN(**kw).eval()


def facenet_mtcnn_weights(wheel, out):
  """The wheel's pnet/rnet/onet.pt converted into jfacediag weights directories OUT/{pnet,rnet,onet}."""
  with zipfile.ZipFile(wheel) as z:
    for net in ("pnet", "rnet", "onet"):
      src = os.path.join(out, f"{net}.pt")
      with open(src, "wb") as f:
        f.write(z.read(f"facenet_pytorch/data/{net}.pt"))
      if convert_cli.main(["--arch", f"mtcnn_{net}", "--src", src, "--out", os.path.join(out, net)]) != 0:
        raise SystemExit(f"could not convert {net}.pt from {wheel}")
  return out


def facenet_detect(net, rgb):
  """facenet-pytorch's detect on one HxWx3 uint8 RGB array: (boxes [n,4], probs [n], landmarks [n,5,2]) in the
  order it returns them (highest probability first with select_largest=False)."""
  boxes, probs, points = net.detect(np.ascontiguousarray(rgb), landmarks=True)
  if boxes is None:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
  return (np.asarray(boxes, np.float32), np.asarray(probs, np.float32), np.asarray(points, np.float32))


# == insightface =======================================================================================================
def insightface_face_align(sdist, workdir):
  """insightface's utils/face_align.py (norm_crop, estimate_norm), imported from the downloaded sdist."""
  root = extract(sdist, os.path.join(workdir, "insightface-2.1"))
  path = os.path.join(root, "insightface-2.1", "insightface", "utils", "face_align.py")
  spec = importlib.util.spec_from_file_location("_upstream_insightface_face_align", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# == torchvision transforms (PIL path) =================================================================================
def torchvision_resize_centre_crop(img, resize=256, crop=224):
  """transforms.Resize(resize) then transforms.CenterCrop(crop) on a PIL image (cydonia999's eval transform)."""
  w, h = img.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = resize, int(resize * long / short)  # _compute_resized_output_size
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  img = img.resize((new_w, new_h), Image.BILINEAR)  # functional_pil.resize
  top, left = round((new_h - crop) / 2.0), round((new_w - crop) / 2.0)  # center_crop
  return img.crop((left, top, left + crop, top + crop))
