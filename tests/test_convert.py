"""The converter: parity of every architecture against its PyTorch reference, safe loading, strict accounting."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, small_config, subprocess_env
from jfacediag import train
from jfacediag import fileio, models
from jfacediag.convert import cli, mapping, sources, verify
from jfacediag import builtin
from jfacediag.models import weights
from jfacediag.reference.randomize import randomize_

TOL = 1e-4  # max |flax - torch| relative to max |torch output|


def _save_random(arch_name, path, seed=0, num_classes=None):
  arch = models.get(arch_name)
  torch.manual_seed(seed)
  model = randomize_(arch.torch_ref(num_classes), seed)
  torch.save(model.state_dict(), path)
  return arch, model


def _check_parity(arch, src, out, x):
  """Compares the weights written to `out` (through orbax and back) with the reference run on the same file."""
  variables, meta, pp = weights.load(str(out))
  assert meta["arch"] == arch.name and meta["sha256"] == fileio.sha256(str(src)) and pp == arch.preprocessing
  ref = verify.torch_outputs(arch, sources.read(str(src)), x, meta["upstream_classes"] or None)
  got = verify.flax_outputs(arch, variables, x)
  diffs = verify.compare(ref, got)
  assert set(diffs) == set(ref) and diffs, (ref.keys(), got.keys())
  for name, (abs_diff, rel) in diffs.items():
    print(f"{arch.name} {name}: max |diff| {abs_diff:.2e}, relative {rel:.2e}")
    assert rel <= TOL, (name, abs_diff, rel)
  return diffs


_FAST_PARITY = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")  # mobilefacenet: test_mobilefacenet.py.


@pytest.mark.parametrize("name", [n if n in _FAST_PARITY else pytest.param(n, marks=pytest.mark.slow)  # sface: onnx
                                  for n in sorted(n for n, a in models.convertible().items() if a.kind != "onnx")])
def test_parity_against_pytorch_reference(name, tmp_path):
  arch, model = _save_random(name, tmp_path / "w.pth")
  assert cli.main(["--arch", name, "--src", str(tmp_path / "w.pth"), "--out", str(tmp_path / "out"),
                   "--verify"]) == 0
  summary = json.loads((tmp_path / "out" / "conversion.json").read_text())
  assert summary["tensors"] == len(model.state_dict())  # Every tensor used, num_batches_tracked included.
  _check_parity(arch, tmp_path / "w.pth", tmp_path / "out", verify.random_input(arch, seed=1))


def test_sface_pytorch_reference_is_the_flax_architecture():
  """SFace converts from ONNX only; its PyTorch twin (keys = Flax paths) is what jfacediag.bench races."""
  arch = models.get("sface")
  model = randomize_(arch.torch_ref(None), 0)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  variables, report = mapping.convert(arch, state)
  assert report["tensors"] == len(state)  # Every tensor used, num_batches_tracked included.
  x = verify.random_input(arch, batch=2, seed=1)
  diffs = verify.compare(verify.torch_outputs(arch, state, x), verify.flax_outputs(arch, variables, x))
  print(f"sface features: max |diff| {diffs['features'][0]:.2e}, relative {diffs['features'][1]:.2e}")
  assert diffs["features"][1] <= TOL


def test_every_architecture_in_help():
  r = subprocess.run([sys.executable, f"{REPO}/tools/convert_weights.py", "--help"], capture_output=True, text=True,
                     env=subprocess_env(), timeout=120)
  assert r.returncode == 0
  for name in models.convertible():
    assert f"  {name} " in r.stdout, name
  assert "mean [91.4953, 103.8827, 131.0912]" in r.stdout and "BGR" in r.stdout


# == Real weights: MTCNN from the facenet-pytorch 2.6.0 wheel ========================================================
@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
  from skimage import data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("img") / "astronaut.png"
  img = data.astronaut()
  Image.fromarray(img).save(path)
  Image.fromarray(img[50:190, 160:300]).save(path.with_name("face.png"))  # Eileen Collins' face, tight.
  Image.fromarray(img[0:200, 0:200]).save(path.with_name("flag.png"))  # No face: the flag corner.
  return [str(path), str(path.with_name("face.png")), str(path.with_name("flag.png"))]


@pytest.mark.parametrize("net,size", [("pnet", 96), ("rnet", 24), ("onet", 48)])
def test_real_mtcnn_weights_match_pytorch_on_real_images(net, size, mtcnn_files, astronaut, tmp_path):
  arch = models.get(f"mtcnn_{net}")
  src = mtcnn_files / f"{net}.pt"
  assert cli.main(["--arch", arch.name, "--src", str(src), "--out", str(tmp_path / "out"), "--verify",
                   "--verify-images", *astronaut, "--verify-size", str(size)]) == 0
  _check_parity(arch, src, tmp_path / "out", verify.image_input(arch, astronaut, size))
  if net == "onet":  # The trained net sees the face in the face crop and none in the flag.
    got = verify.flax_outputs(arch, weights.load(str(tmp_path / "out"))[0], verify.image_input(arch, astronaut, 48))
    assert got["prob"][1, 1] > 0.9 and got["prob"][2, 1] < 0.5, got["prob"]


# == File formats and safe loading ===================================================================================
def test_formats_nesting_and_prefixes_read_the_same(tmp_path):
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  _, model = _save_random("mtcnn_rnet", tmp_path / "plain.pth")
  sd = model.state_dict()
  torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "nested.pth")
  torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
  save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
  with open(tmp_path / "numpy.pkl", "wb") as f:
    pickle.dump({k: v.numpy() for k, v in sd.items()}, f, protocol=2)
  want = {k: v.numpy() for k, v in sd.items()}
  for name in ("plain.pth", "nested.pth", "legacy.pt", "w.safetensors", "numpy.pkl"):
    got = sources.read(str(tmp_path / name))
    assert set(got) == set(want), name
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}: {k}")


class _Evil:
  marker = ""

  def __reduce__(self):
    return (open, (self.marker, "w"))  # Unpickling this would create the marker file.


@pytest.mark.parametrize("fmt", ["pkl", "torch"])
def test_code_in_a_pickle_is_refused_and_never_runs(fmt, tmp_path):
  marker = tmp_path / "pwned"
  evil = _Evil()
  evil.marker = str(marker)
  src = tmp_path / ("evil.pkl" if fmt == "pkl" else "evil.pth")
  if fmt == "pkl":
    with open(src, "wb") as f:
      pickle.dump({"conv1.weight": np.zeros(3), "x": evil}, f, protocol=2)
  else:
    torch.save({"conv1.weight": torch.zeros(3), "x": evil}, src)
  assert not marker.exists()
  with pytest.raises(sources.UnsafeCheckpoint, match="refus"):
    sources.read(str(src))
  assert cli.main(["--arch", "mtcnn_pnet", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_html_instead_of_weights_is_named(tmp_path):
  (tmp_path / "w.pth").write_text("<!DOCTYPE html><html>quota exceeded</html>")
  with pytest.raises(ValueError, match="HTML page"):
    sources.read(str(tmp_path / "w.pth"))


def test_missing_extra_and_misshaped_keys_in_one_error(tmp_path):
  _, model = _save_random("resnet18", tmp_path / "w.pth")
  sd = model.state_dict()
  del sd["layer2.0.bn1.running_var"]
  sd["layer9.0.conv1.weight"] = torch.zeros(3, 3)
  sd["layer1.1.conv2.weight"] = torch.zeros(64, 64, 5, 5)
  torch.save(sd, tmp_path / "bad.pth")
  with pytest.raises(mapping.ConversionError) as e:
    mapping.convert(models.get("resnet18"), sources.read(str(tmp_path / "bad.pth")))
  msg = str(e.value)
  assert "1 missing, 1 unused, 1 mis-shaped" in msg
  assert "- layer2.0.bn1.running_var" in msg and "+ layer9.0.conv1.weight (3, 3)" in msg
  assert "! layer1.1.conv2.weight" in msg


@pytest.mark.slow
def test_verify_catches_the_wrong_resnet_variant(tmp_path, capsys):
  """A VGGFace2 (Caffe-style) file has torchvision's key names: converting it as torchvision resnet50 passes the key
  checks but --verify refuses, naming the right variant."""
  _save_random("resnet50_vggface2", tmp_path / "vggface2.pth")
  assert cli.main(["--arch", "resnet50", "--src", str(tmp_path / "vggface2.pth"), "--out", str(tmp_path / "o"),
                   "--verify"]) == 2
  assert "--arch resnet50_vggface2" in capsys.readouterr().err


@pytest.mark.slow
def test_converted_backbone_trains_in_the_spine(toy_dir, tmp_path):
  _arch, _ = _save_random("resnet18", tmp_path / "w.pth")
  assert cli.main(["--arch", "resnet18", "--src", str(tmp_path / "w.pth"), "--out", str(tmp_path / "weights")]) == 0
  cfg = small_config(toy_dir, epochs=0.2, **{"model.backbone": "resnet18", "init.checkpoint": str(tmp_path / "weights"),
                                            "eval.bootstrap": 0})
  result = train.run(cfg, str(tmp_path / "wd"))
  assert result["num_test"] == 36
  m = json.loads((tmp_path / "wd" / "report" / "metrics.json").read_text())
  assert m["run"]["init_checkpoint"] == str(tmp_path / "weights") and m["run"]["checkpoint_step"] == 1


# == Malformed files: one line naming the file, exit code 2 ===========================================================
def _malformed(kind, d):
  """Writes one broken or odd weights file of `kind` into d; returns its path."""
  sd = {"conv1.weight": torch.randn(10, 3, 3, 3), "conv1.bias": torch.randn(10)}
  path = d / {"torch_zip": "w.pth", "torch_legacy": "w.pt", "pickle": "w.pkl", "random": "w.pth",
              "st_list": "w.safetensors", "st_no_offsets": "w.safetensors", "st_string": "w.safetensors",
              "st_truncated": "w.safetensors", "onnx_garbage": "w.onnx", "onnx_truncated": "w.onnx",
              "onnx_outside": "ext/w.onnx", "onnx_missing": "ext/w.onnx", "npy_plain": "w.npy",
              "npz_object": "w.npz"}[kind]
  path.parent.mkdir(parents=True, exist_ok=True)

  def half(write):
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])

  def safetensors(header, data=b"\0" * 64):
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + data)

  if kind == "torch_zip":
    half(lambda p: torch.save(sd, p))
  elif kind == "torch_legacy":
    half(lambda p: torch.save(sd, p, _use_new_zipfile_serialization=False))
  elif kind == "pickle":
    half(lambda p: p.write_bytes(pickle.dumps({k: v.numpy() for k, v in sd.items()}, protocol=2)))
  elif kind == "random":
    path.write_bytes(np.random.default_rng(0).bytes(5000))
  elif kind == "st_list":
    safetensors([1, 2])
  elif kind == "st_no_offsets":
    safetensors({"conv1.weight": {"dtype": "F32", "shape": [2]}})
  elif kind == "st_string":
    safetensors({"conv1.weight": "hello"})
  elif kind == "st_truncated":
    safetensors({"conv1.weight": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}})
  elif kind in ("onnx_garbage", "onnx_truncated"):
    data = open(builtin.source_file("sface"), "rb").read()
    path.write_bytes(np.random.default_rng(0).bytes(3000) if kind == "onnx_garbage" else data[:len(data) // 3])
  elif kind in ("onnx_outside", "onnx_missing"):
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import helper, numpy_helper, TensorProto  # pylint: disable=g-import-not-at-top
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    onnx.save_model(helper.make_model(g), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    m = onnx.load(str(path), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
      if e.key == "location":
        e.value = "../../outside.bin" if kind == "onnx_outside" else "missing.bin"
    onnx.save(m, str(path))
  elif kind == "npy_plain":
    np.save(path, np.zeros((3, 3), np.float32))
  elif kind == "npz_object":
    np.savez(path, **{"conv1.weight": np.array([{"a": 1}], dtype=object)})
  return path


@pytest.mark.parametrize("kind,says", [
    ("torch_zip", "whose end is missing"), ("torch_legacy", "torch.load cannot read it"),
    ("pickle", "pickle data was truncated"), ("random", "none of the formats"), ("st_list", "JSON list"),
    ("st_no_offsets", "data_offsets"), ("st_string", "each tensor needs"), ("st_truncated", "spans bytes"),
    ("onnx_garbage", "not a valid ONNX model"), ("onnx_truncated", "not a valid ONNX model"),
    ("onnx_outside", "refused: its external data"), ("onnx_missing", "external data cannot be read"),
    ("npy_plain", "not named tensors"), ("npz_object", "object arrays")])
def test_a_malformed_file_gets_one_line_and_exit_code_2(kind, says, tmp_path, capsys):
  src = _malformed(kind, tmp_path)
  arch = "sface" if kind.startswith("onnx") else "mtcnn_pnet"
  code = cli.main(["--arch", arch, "--src", str(src), "--out", str(tmp_path / "out")])  # An escaping error fails.
  err = capsys.readouterr().err.strip().splitlines()
  print(kind, "->", err)
  assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(src) in err[0] and says in err[0]
  assert not (tmp_path / "out").exists()


def test_npz_and_protocol5_pickles_of_arrays_are_read(tmp_path):
  want = {"conv1.weight": np.random.default_rng(0).normal(size=(10, 3, 3, 3)).astype(np.float32),
          "conv1.bias": np.arange(10, dtype=np.float32)}
  np.savez(tmp_path / "w.npz", **want)
  (tmp_path / "w5.pkl").write_bytes(pickle.dumps(want, protocol=5))  # numpy 2: numpy._core.numeric._frombuffer.
  for name in ("w.npz", "w5.pkl"):
    got = sources.read(str(tmp_path / name))
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want), name
