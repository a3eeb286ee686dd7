"""MobileFaceNet, the backbone added by the README's recipe: both upstream namings convert and match their PyTorch
reference, a legacy {'epoch', 'net_state_dict'} file included; the 112x96 variant's input is the centre of an
arcface112 crop; embed takes the converted weights."""
import json

import cv2
import numpy as np
from PIL import Image
import pytest
from skimage import data
import torch

from jfacediag import embed, models
from jfacediag.align import detectors, styles
from jfacediag.convert import cli, mapping, sources, verify
from jfacediag.models import weights
from jfacediag.reference.randomize import randomize_

TOL = 1e-4


def _random_state(name, seed=0):
  model = randomize_(models.get(name).torch_ref(None), seed)
  return model, model.state_dict()


def _parity(name, src, out):
  arch = models.get(name)
  variables, meta, pp = weights.load(str(out))
  assert meta["arch"] == name and pp == arch.preprocessing
  x = verify.random_input(arch, seed=3)
  diffs = verify.compare(verify.torch_outputs(arch, sources.read(str(src)), x), verify.flax_outputs(arch, variables, x))
  print(name, diffs)
  assert set(diffs) == {"features"} and diffs["features"][1] <= TOL, diffs


@pytest.mark.slow
def test_xiaoccer_legacy_checkpoint_converts_and_matches(tmp_path):
  _model, sd = _random_state("mobilefacenet_112x96")
  src = tmp_path / "068.ckpt"  # Xiaoccer's train.py: torch.save({'epoch': epoch, 'net_state_dict': ...}, '%03d.ckpt').
  torch.save({"epoch": 68, "net_state_dict": sd}, src, _use_new_zipfile_serialization=False)
  with open(src, "rb") as f:
    assert f.read(2) != b"PK"  # The legacy (pre-1.6) format, not a zip.
  assert "blocks.14.conv.7.running_var" in sd and sd["linear7.conv.weight"].shape == (512, 1, 7, 6)
  assert cli.main(["--arch", "mobilefacenet_112x96", "--src", str(src), "--out", str(tmp_path / "w"),
                   "--verify"]) == 0
  assert json.loads((tmp_path / "w" / "conversion.json").read_text())["tensors"] == len(sd)
  _parity("mobilefacenet_112x96", src, tmp_path / "w")


def test_treb1en_state_dict_converts_and_matches(tmp_path):
  model, sd = _random_state("mobilefacenet", seed=1)
  assert "conv_4.model.5.conv_dw.prelu.weight" in sd and sd["linear.weight"].shape == (512, 512)
  torch.save(sd, tmp_path / "model_mobilefacenet.pth")
  assert cli.main(["--arch", "mobilefacenet", "--src", str(tmp_path / "model_mobilefacenet.pth"),
                   "--out", str(tmp_path / "w"), "--verify"]) == 0
  _parity("mobilefacenet", tmp_path / "model_mobilefacenet.pth", tmp_path / "w")
  # The reference's output is upstream's before its l2_norm: the same direction as TreB1eN's forward.
  x = torch.from_numpy(verify.random_input(models.get("mobilefacenet")))
  feats, _ = model.eval()(x)
  assert torch.allclose(torch.nn.functional.normalize(feats), feats / feats.norm(dim=1, keepdim=True))


@pytest.mark.slow
def test_the_other_variant_is_named_when_the_file_does_not_fit(tmp_path, capsys):
  _, sd = _random_state("mobilefacenet_112x96")
  torch.save({"epoch": 1, "net_state_dict": sd}, tmp_path / "x.ckpt")
  assert cli.main(["--arch", "mobilefacenet", "--src", str(tmp_path / "x.ckpt"), "--out", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err
  assert "does not fit --arch mobilefacenet" in err and "The file fits --arch mobilefacenet_112x96." in err
  with pytest.raises(mapping.ConversionError, match="missing"):
    mapping.convert(models.get("mobilefacenet"), sources.read(str(tmp_path / "x.ckpt")))


def test_112x96_crop_is_the_centre_of_the_arcface112_crop():
  """SphereFace's template is ArcFace's moved 8 px left: warping a real photo onto it at 96x112 gives the central
  96 columns of the arcface112 crop (what mobilefacenet_112x96's module keeps)."""
  img = data.astronaut()
  face = detectors.largest(detectors.make("yunet").detect(img))
  crop112, m112 = styles.align(img, face, "arcface112")
  m96 = styles.similarity(face.landmarks, styles.ARCFACE_TEMPLATE.astype(np.float32) - [8.0, 0.0])
  np.testing.assert_allclose(m96, m112 - [[0, 0, 8], [0, 0, 0]], atol=1e-4)
  crop96 = cv2.warpAffine(img, m96, (96, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  diff = np.abs(crop96.astype(int) - crop112[:, 8:104].astype(int))
  print(f"112x96 warp vs centre of arcface112: max {diff.max()}, mean {diff.mean():.4f} grey levels")
  assert diff.mean() < 0.05 and np.mean(diff > 1) < 0.001


@pytest.mark.slow
def test_embed_takes_converted_mobilefacenet(tmp_path):
  model, sd = _random_state("mobilefacenet_112x96", seed=2)
  torch.save(sd, tmp_path / "w.pth")
  argv = ["--arch", "mobilefacenet_112x96", "--src", str(tmp_path / "w.pth"), "--out", str(tmp_path / "w")]
  assert cli.main(argv) == 0
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
  for i, c in enumerate(crops):
    Image.fromarray(c).save(tmp_path / f"{i}.png")
  args = embed.parse(["--weights", str(tmp_path / "w"), "--images", *(str(tmp_path / f"{i}.png") for i in range(3)),
                      "--out", str(tmp_path / "e.npz")])
  got = embed.run(args, quiet=True)
  assert got.shape == (3, 128)
  x = (crops.astype(np.float32) - 127.5) / 128.0
  with torch.no_grad():
    want, _ = model.eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  want = want.numpy()
  cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
  assert np.all(cos > 1 - 1e-5) and np.max(np.abs(got - want)) <= TOL * np.max(np.abs(want)), cos
