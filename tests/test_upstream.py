"""Fidelity to the upstream code itself, on real photos: facenet-pytorch's MTCNN (from its wheel), insightface's
norm_crop (from its sdist), cydonia999's VGGFace2 evaluation crop and OpenCV's FaceRecognizerSF (the code SFace
ships with). jfacediag.reference.upstream imports the upstream files unchanged; nothing here re-implements them.

Photos: scikit-image's astronaut and LFW subset, face_recognition 1.3.0's test photos (Obama, Biden; 626-2333 px)
and insightface 2.1's group photo t1.jpg, all from PyPI archives (pip download, cached in $JFACEDIAG_TEST_CACHE).
"""
import glob
import os
import re

import cv2
import numpy as np
from PIL import Image
import pytest
from skimage import data
import torch

from conftest import pypi_file
from jfacediag import builtin, models
from jfacediag.align import detectors, mtcnn, styles
from jfacediag.data import pipeline
from jfacediag.models import sface, weights
from jfacediag.reference import upstream

TOL_PX = 1e-3
SIZES = ((150, 150), (151, 149), (333, 250), (1100, 900))  # (w, h): small, odd pyramid sides, large.


@pytest.fixture(scope="module")
def facenet(facenet_wheel, tmp_path_factory):
  torch.set_num_threads(2)
  return upstream.facenet_mtcnn(facenet_wheel, str(tmp_path_factory.mktemp("facenet")), select_largest=False)


@pytest.fixture(scope="module")
def detect_face(facenet):
  import sys  # pylint: disable=g-import-not-at-top
  return sys.modules["_upstream_facenet_pytorch.models.utils.detect_face"]


@pytest.fixture(scope="module")
def ours(mtcnn_weights):
  return detectors.make("mtcnn", str(mtcnn_weights))  # The default: full-size detection, as upstream.


@pytest.fixture(scope="module")
def insightface_sdist(tmp_path_factory):
  return pypi_file(tmp_path_factory, "insightface==2.1", upstream.INSIGHTFACE_SDIST, sdist=True)


@pytest.fixture(scope="module")
def face_align(insightface_sdist, tmp_path_factory):
  return upstream.insightface_face_align(insightface_sdist, str(tmp_path_factory.mktemp("insightface")))


@pytest.fixture(scope="module")
def group_photo(face_align, insightface_sdist):
  path = glob.glob(os.path.join(os.path.dirname(os.path.dirname(face_align.__file__)), "data", "images", "t1.jpg"))
  return np.asarray(Image.open(path[0]).convert("RGB"))


@pytest.fixture(scope="module")
def obama_photos(tmp_path_factory):
  """face_recognition 1.3.0's real test photos (obama*.jpg, biden.jpg), from its sdist."""
  sdist = pypi_file(tmp_path_factory, "face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", sdist=True)
  root = upstream.extract(sdist, str(tmp_path_factory.mktemp("face_recognition")))
  files = sorted(glob.glob(os.path.join(root, "face_recognition-1.3.0", "tests", "test_images", "*.jpg")))
  return {os.path.basename(f): np.asarray(Image.open(f).convert("RGB")) for f in files}


def _lfw(i):
  return np.repeat((data.lfw_subset()[i] * 255).astype(np.uint8)[..., None], 3, -1)


def _resized(img, w, h):
  return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w < img.shape[1] else cv2.INTER_CUBIC)


def _compare(facenet, ours, img, name):
  """Largest |difference| over every box, score and landmark (inf when the face counts differ)."""
  with torch.no_grad():
    ub, us, ul = upstream.facenet_detect(facenet, img)
  faces = ours.detect(img)
  if len(faces) != len(ub):
    print(f"{name} {img.shape[1]}x{img.shape[0]}: upstream {len(ub)} faces, jfacediag {len(faces)}")
    return np.inf
  if not faces:
    return 0.0
  ob, os_, ol = (np.array([f.box for f in faces]), np.array([f.score for f in faces]),
                 np.array([f.landmarks for f in faces]))
  return float(max(np.abs(ub - ob).max(), np.abs(ul - ol).max(), np.abs(us - os_).max()))


# == MTCNN =============================================================================================================
def test_pnet_keeps_the_last_ceil_mode_cell(facenet, ours):
  """A level whose side minus 2 is odd (91 x 64): torch's ceil-mode pool keeps a last cell that reads one conv
  column; PNet told which conv1 outputs read the level computes it on a zero-padded canvas exactly."""
  hs, ws = 91, 64
  level = mtcnn.normalise(_resized(data.astronaut(), ws, hs))
  with torch.no_grad():
    ref_reg, ref_prob = facenet.pnet(torch.from_numpy(level).permute(2, 0, 1)[None])
  padded = np.zeros((1, 96, 96, 3), np.float32)
  padded[0, :hs, :ws] = level
  valid = np.zeros((94, 94), bool)
  valid[:hs - 2, :ws - 2] = True
  reg, prob = (np.asarray(o)[0] for o in ours.net.pnet(ours.net.vars["pnet"], padded, valid))
  oh, ow = ref_prob.shape[2:]
  assert (oh, ow) == (-(-(hs - 2) // 2) - 4, -(-(ws - 2) // 2) - 4) == (41, 27)
  np.testing.assert_allclose(prob[:oh, :ow, 1], ref_prob[0, 1].numpy(), atol=1e-5)
  np.testing.assert_allclose(reg[:oh, :ow], ref_reg[0].permute(1, 2, 0).numpy(), atol=1e-5)


def test_last_nms_breaks_ties_as_upstream(detect_face):
  """Saturated probabilities tie in float32 (0.99999988); upstream's numpy NMS takes candidates from the end of
  np.argsort, so the tie goes to the later box. jfacediag's last NMS is the same code path."""
  rng = np.random.default_rng(0)
  for _ in range(50):
    n = int(rng.integers(2, 40))
    xy = rng.uniform(0, 60, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(20, 40, (n, 2)).astype(np.float32)], 1)
    scores = rng.choice(np.array([0.99999988, 0.9999, 0.95], np.float32), n)
    want = detect_face.nms_numpy(boxes, scores, 0.7, "Min")
    np.testing.assert_array_equal(mtcnn.nms_min(boxes, scores, 0.7), want)


def test_first_nms_steps_are_torchvisions():
  """Distinct scores (ties are torch's unstable sort's business; see align/mtcnn.py): the same kept boxes, in the
  same order, as the torchvision stand-in the upstream pipeline runs with."""
  rng = np.random.default_rng(1)
  for k in range(30):
    n = int(rng.integers(1, 300)) if k % 3 else int(rng.integers(300, 900))  # Several blocks of mtcnn._NMS_BLOCK.
    xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2)).astype(np.float32)], 1)
    scores = rng.permutation(n).astype(np.float32) / n
    want = upstream.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(n), 0.5)
    np.testing.assert_array_equal(mtcnn.nms(boxes, scores, 0.5), want.numpy())


@pytest.mark.slow
def test_bench_mtcnn_runs_and_its_nms_stand_in_leaves_facenet_pytorch_unchanged(facenet, facenet_wheel, mtcnn_weights,
                                                                                 obama_photos, monkeypatch, capsys):
  """tools/bench_mtcnn.py gives facenet-pytorch align.mtcnn.nms as torchvision's NMS: the same boxes, scores and
  landmarks as with the oracle stand-in, on generated and real photos; and the bench runs end to end."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("_bench_mtcnn", os.path.join(REPO, "tools", "bench_mtcnn.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  imgs = bench.photos(480, 640, 3) + list(obama_photos.values())[:2]
  with torch.no_grad():
    want = [upstream.facenet_detect(facenet, img) for img in imgs]
    monkeypatch.setattr(upstream, "_nms", bench._nms_stand_in)  # pylint: disable=protected-access
    got = [upstream.facenet_detect(facenet, img) for img in imgs]
  for w, g in zip(want, got):
    assert len(w[0]) == len(g[0]) > 0
    for a, b in zip(w, g):
      np.testing.assert_array_equal(a, b)
  bench.main(["--facenet-wheel", str(facenet_wheel), "--mtcnn-weights", str(mtcnn_weights), "--sizes", "150x150",
              "--n", "2", "--passes", "1"])  # It sets upstream._nms itself; monkeypatch restores the oracle.
  out = capsys.readouterr().out
  assert "facenet-pytorch's NMS: align.mtcnn.nms" in out
  assert re.search(r"150x150: jfacediag [\d.]+ img/s .* facenet-pytorch [\d.]+ img/s; ratio [\d.]+", out), out


def test_mtcnn_equals_facenet_pytorch_on_small_photos(facenet, ours):
  worst = {}
  for name, img in (("astronaut", data.astronaut()), ("lfw0", _lfw(0))):
    for w, h in SIZES[:3]:
      worst[f"{name} {w}x{h}"] = _compare(facenet, ours, _resized(img, w, h), name)
  print("largest |difference| (px, or probability):", {k: f"{v:.1e}" for k, v in worst.items()})
  assert max(worst.values()) <= TOL_PX


@pytest.mark.slow
def test_mtcnn_equals_facenet_pytorch_on_real_photos(facenet, ours, obama_photos, group_photo):
  """Every photo at its own size (626 to 2333 px, the group photo's 6 faces included) and rescaled to 150x150,
  151x149, 333x250 and 1100x900."""
  photos = {**obama_photos, "t1.jpg": group_photo, **{f"lfw{i}": _lfw(i) for i in (3, 17, 42)}}
  worst, faces = {}, 0
  for name, img in photos.items():
    if not name.startswith("lfw"):
      worst[name] = _compare(facenet, ours, img, name)
      faces += len(ours.detect(img))
    for w, h in SIZES:
      worst[f"{name} {w}x{h}"] = _compare(facenet, ours, _resized(img, w, h), name)
  print(f"{len(worst)} detections compared ({faces} faces at full size); largest |difference|: "
        f"{max(worst.values()):.1e}")
  assert faces >= 12 and max(worst.values()) <= TOL_PX, {k: v for k, v in worst.items() if v > TOL_PX}


# == Crops =============================================================================================================
def _faces(ours, img):
  return ours.detect(img)


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")  # In insightface's own code.
def test_arcface112_equals_insightface_norm_crop(face_align, ours, group_photo):
  imgs = [data.astronaut(), group_photo]
  n, worst = 0, 0
  for img in imgs:
    for face in _faces(ours, img):
      crop, _ = styles.align(img, face, "arcface112")
      ref = face_align.norm_crop(img, face.landmarks.astype(np.float32), 112)
      worst = max(worst, int(np.abs(crop.astype(int) - ref.astype(int)).max()))
      n += 1
  print(f"arcface112 vs insightface norm_crop on {n} real faces: largest difference {worst} grey level(s)")
  assert n >= 7 and worst <= 1


def test_facenet160_equals_facenet_pytorch_extract_face(detect_face, ours, group_photo):
  img = group_photo
  faces = _faces(ours, img)
  edge = detectors.Face(np.array([-30.5, 700.2, 180.9, 890.7], np.float32), 1.0, np.zeros((5, 2), np.float32))
  for face in faces + [edge]:  # The last box leaves the photo: clipped as upstream clips it.
    crop, _m = styles.align(img, face, "facenet160")
    ref = detect_face.extract_face(Image.fromarray(img), face.box, 160, 32).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(crop, ref.astype(np.uint8))
    assert crop.shape == (160, 160, 3)


def test_vggface224_equals_cydonia999_evaluation_crop(ours, group_photo):
  """cydonia999 (datasets/vgg_face2.py) feeds Resize(256) + CenterCrop(224) of a face image; here the image is the
  PIL crop of the box grown by 30%."""
  img = group_photo
  faces = _faces(ours, img)
  edge = detectors.Face(np.array([-30.5, 700.2, 180.9, 890.7], np.float32), 1.0, np.zeros((5, 2), np.float32))
  for face in faces + [edge]:
    crop, m = styles.align(img, face, "vggface224")
    x1, y1, x2, y2 = face.box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, 1.3 * (x2 - x1), 1.3 * (y2 - y1)
    loose = Image.fromarray(img).crop((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    ref = np.asarray(upstream.torchvision_resize_centre_crop(loose, 256, 224))
    np.testing.assert_array_equal(crop, ref)
    centre = np.array([cx, cy]) @ m[:, :2].T + m[:, 2]
    assert np.abs(centre - 112).max() < 3  # The box centre lands mid-crop (up to rounding the box to pixels).
    side = (x2 - x1) * m[0, 0]  # The shorter side of the grown box becomes 256 px.
    assert abs(side - 256 / 1.3 * (x2 - x1) / min(x2 - x1, y2 - y1)) < 3


def test_aligned_crops_are_fed_whole(tmp_path, ours):
  """An aligned 224 px vggface224 crop reaches the network unchanged; the raw VGGFace2 preprocessing (shorter side
  256, centre 224) would zoom it by 256/224 a second time."""
  face = _faces(ours, data.astronaut())[0]
  crop, _ = styles.align(data.astronaut(), face, "vggface224")
  Image.fromarray(crop).save(tmp_path / "a.png")
  pp = models.get("resnet50_vggface2").preprocessing
  want = (crop[..., ::-1].astype(np.float32) - np.array(pp.mean, np.float32)) / np.array(pp.std, np.float32)

  def fed(p):
    _, it = pipeline.eval_batches(str(tmp_path), ["a.png"], np.zeros(1, np.int32), p, 1)
    return next(it)["image"][0]
  np.testing.assert_allclose(fed(pp.for_crops()), want, atol=1e-4)
  assert np.abs(fed(pp) - want).mean() > 5  # What the trainer did before: a different crop.


@pytest.mark.slow
def test_training_feeds_an_aligned_folder_whole(tmp_path):
  from configs import toy  # pylint: disable=g-import-not-at-top
  from jfacediag import network  # pylint: disable=g-import-not-at-top
  c = toy.get_config()
  c.model.input_size = 32
  pp = network.build(c, ["a", "b"], str(tmp_path)).pp
  assert pp.resize_size > pp.input_size  # A folder of photos: resized and centre-cropped as the backbone's upstream.
  (tmp_path / "align.json").write_text('{"settings": {"style": "paper", "size": 0}}')
  pp = network.build(c, ["a", "b"], str(tmp_path)).pp
  assert pp.resize_size == pp.input_size == 32


@pytest.mark.slow
# == Channel order =====================================================================================================
def test_sface_equals_opencv_facerecognizersf(tmp_path, monkeypatch, group_photo):
  """OpenCV's FaceRecognizerSF, the code the SFace model ships with: alignCrop on YuNet's face row and feature()
  (blobFromImage with swapRB) equal jfacediag's arcface112 crop and builtin:sface embedding."""
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "cache"))
  variables, _, pp = weights.load(builtin.resolve("builtin:sface"))
  assert pp == models.get("sface").preprocessing and pp.channel_order == "RGB"
  rec = cv2.FaceRecognizerSF.create(builtin.source_file("sface"), "")
  yunet = cv2.FaceDetectorYN.create(detectors.yunet_model_path(), "", (320, 320), 0.6, 0.3, 5000)
  crops, cv_feats, worst, off = [], [], 0, 0.0
  for img in (data.astronaut(), group_photo):
    bgr = np.ascontiguousarray(img[..., ::-1])
    yunet.setInputSize((bgr.shape[1], bgr.shape[0]))
    for row in yunet.detect(bgr)[1]:
      cv_crop = rec.alignCrop(bgr, row)
      face = detectors.Face(np.zeros(4, np.float32), float(row[14]), row[4:14].reshape(5, 2))
      crop, _ = styles.align(img, face, "arcface112")
      diff = np.abs(crop[..., ::-1].astype(int) - cv_crop.astype(int))
      worst, off = max(worst, int(diff.max())), max(off, float((diff > 1).mean()))
      crops.append(crop)
      cv_feats.append(rec.feature(cv_crop)[0])
  x = (np.stack(crops).astype(np.float32) - 127.5) / 128.0  # RGB, as pp says.
  got = np.asarray(sface.SFace().apply({"params": variables["params"], "batch_stats": variables["batch_stats"]}, x))
  ref = np.stack(cv_feats)
  cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
  print(f"{len(crops)} faces: alignCrop vs arcface112 at most {worst} grey level(s) ({100 * off:.4f}% of values "
        f"off by more than one); cosine to FaceRecognizerSF.feature min {cos.min():.6f}")
  # OpenCV estimates the similarity in its own float arithmetic: 2 grey levels on 3 of 37,632 values at most.
  assert len(crops) >= 7 and worst <= 2 and off < 1e-3 and cos.min() >= 0.99999


def test_each_vgg_face_naming_gets_its_upstreams_pixels():
  arch = models.get("vgg_face")
  pp, label = arch.source_preprocessing(["conv_1_1.weight", "fc8.weight"])
  assert "prlz77" in label and pp.channel_order == "BGR" and pp.mean == (129.1863, 104.7624, 93.5940)
  pp, label = arch.source_preprocessing(["conv1_1.weight", "fc8.weight"])
  assert "albanie" in label and pp.channel_order == "RGB"
  assert models.get("resnet50").source_preprocessing(["conv1.weight"]) == (models.get("resnet50").preprocessing, "")
