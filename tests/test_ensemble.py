"""Ensembles of backbones (models/ensemble.py) for DTL2 and predict, and run:RUN weights.

The members: builtin:sface (real weights, RGB, 127.5/128) and a randomly initialised ResNet-tiny weights directory
with BGR preprocessing and other means and stds, so each member's own preprocessing is exercised.
"""
import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from skimage import data

from conftest import small_config
from jfacediag import checkpointing, config_check, embed, network, predict, steps, train
from jfacediag import builtin
from jfacediag.models import classifier, ensemble, weights
from jfacediag.models import get as get_backbone
from jfacediag.models.preprocessing import Preprocessing

TINY_PP = Preprocessing(112, 112, "BGR", (90.0, 100.0, 110.0), (50.0, 60.0, 70.0))


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
  """One $JFACEDIAG_CACHE for the module: builtin:sface is converted once."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("JFACEDIAG_CACHE", str(tmp_path_factory.mktemp("jcache")))
    yield


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tiny_weights"))
  v = steps.init_variables(get_backbone("resnet_tiny").make(), 3, 112)
  weights.save(out, {"params": v["params"], "batch_stats": v["batch_stats"]},
               {"arch": "resnet_tiny", "preprocessing": TINY_PP.to_dict(), "source": "random, seed 3"})
  return out


def _cfg(root, checkpoints, **kw):
  c = small_config(root, method="svm", size=112, **{"model.backbone": "ensemble",
                                                      "init.checkpoint": ",".join(checkpoints), **kw})
  return c


def _crops(n=4):
  a = data.astronaut()
  return [np.asarray(Image.fromarray(a[20 * k:300 + 20 * k, 100:380]).resize((112, 112), Image.BILINEAR))
          for k in range(n)]


@pytest.mark.slow
def test_ensemble_features_are_each_members_own_features_normalised_and_joined(tiny_weights, tmp_path):
  net = network.build(_cfg(tmp_path, ["builtin:sface", tiny_weights]), ["a", "b"], str(tmp_path))
  spec, pp, model, variables = net.spec, net.pp, net.model, net.variables
  assert spec.feature_dim == 128 + 64 and pp.mean == (0, 0, 0) and pp.std == (1, 1, 1) and pp.input_size == 112
  assert spec.align_style == "arcface112" and spec.cam_layer == "members_0/bn1"
  crops = _crops()
  features = jax.jit(lambda v, x: model.apply(v, x, method=model.features))
  got = np.asarray(features(variables, jnp.asarray(np.stack(crops), jnp.float32)))
  parts = []
  for w in ("builtin:sface", tiny_weights):  # Each member alone, through the plain embedder and its own weights.
    e = embed.Embedder(w)(crops)
    parts.append(e / np.linalg.norm(e, axis=1, keepdims=True))
  np.testing.assert_allclose(got, np.concatenate(parts, 1), atol=2e-5)


def test_members_are_averaged_or_joined_and_resized_to_their_own_input():
  # "mean" averages members of equal size; a member at another input side is resized inside the module.
  spec2 = ensemble.make_spec([("sface", get_backbone("sface").preprocessing)] * 2, "mean")
  m2 = classifier.Classifier(spec2.make(), 2)
  x = jnp.zeros((2, 112, 112, 3))
  def shape(m):
    return jax.eval_shape(lambda x: m.init_with_output(jax.random.PRNGKey(0), x, method=m.features)[0], x)
  assert shape(m2).shape == (2, 128)
  spec3 = ensemble.make_spec([("sface", get_backbone("sface").preprocessing), ("resnet_tiny", TINY_PP.at_size(64))])
  m3 = classifier.Classifier(spec3.make(), 2)
  assert shape(m3).shape == (2, 192)


def test_impossible_ensembles_are_refused_with_the_reason(tmp_path):
  sface = ("sface", get_backbone("sface").preprocessing)
  with pytest.raises(ValueError, match="at least 2 weights"):
    ensemble.make_spec([sface])
  with pytest.raises(ValueError, match="different alignments .*sface: arcface112, vgg_face: paper"):
    ensemble.make_spec([sface, ("vgg_face", get_backbone("vgg_face").preprocessing)])
  with pytest.raises(ValueError, match="equal feature sizes; the members give \\[128, 64\\]"):
    ensemble.make_spec([sface, ("resnet_tiny", TINY_PP)], "mean")
  with pytest.raises(ValueError, match="ensemble_combine='sum'"):
    ensemble.make_spec([sface, sface], "sum")
  c = small_config(tmp_path, method="svm", **{"init.checkpoint": "builtin:sface,builtin:sface",
                                              "model.backbone": "sface"})
  with pytest.raises(ValueError, match="several need model.backbone='ensemble'"):
    network.build(c, ["a", "b"], str(tmp_path))
  # The same mistakes are refused before any work, with the field.
  with pytest.raises(ValueError, match="several weights need model.backbone = 'ensemble'"):
    config_check.validate(c)
  with pytest.raises(ValueError, match="'ensemble' needs 2 or more"):
    config_check.validate(small_config(tmp_path, **{"model.backbone": "ensemble", "init.checkpoint": "builtin:sface"}))
  with pytest.raises(ValueError, match="model.ensemble_combine = 'sum'"):
    config_check.validate(_cfg(tmp_path, ["builtin:sface", "builtin:sface"], **{"model.ensemble_combine": "sum"}))


@pytest.mark.slow
def test_dtl2_on_an_ensemble_predicts_like_its_report_and_exports_as_run_weights(toy_dir, tiny_weights, tmp_path):
  workdir = str(tmp_path / "ens")
  result = train.run(_cfg(toy_dir, ["builtin:sface", tiny_weights]), workdir)
  assert 0 <= result["accuracy"]["value"] <= 1
  facts = json.load(open(os.path.join(workdir, "report", "metrics.json")))["run"]
  assert facts["backbone"] == "ensemble(sface+resnet_tiny)"
  assert [m["arch"] for m in facts["ensemble"]] == ["sface", "resnet_tiny"]
  assert facts["ensemble"][1]["preprocessing"]["channel_order"] == "BGR"
  with open(os.path.join(workdir, "report", "predictions.csv"), newline="", encoding="utf-8") as f:
    want = {r["file"]: [float(r[k]) for k in r if k.startswith("prob_")] for r in csv.DictReader(f)}
  out = tmp_path / "preds"
  files = [os.path.join(str(toy_dir), f) for f in sorted(want)]
  assert predict.main(["--run", workdir, "--images", *files, "--out", str(out), "--align", "none"]) == 0
  with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
    got = {os.path.relpath(r["source"], str(toy_dir)): [float(r[k]) for k in r if k.startswith("prob_")]
           for r in csv.DictReader(f)}
  assert len(got) == len(want) == 36
  for name, probs in want.items():
    np.testing.assert_allclose(got[name], probs, atol=1e-4)
  # run: weights are a DTL1 run's backbone; a DTL2 run has none of its own and is refused.
  with pytest.raises(ValueError, match="is a svm run: its backbone is its init.checkpoint"):
    builtin.resolve(f"run:{workdir}")
  ft = str(tmp_path / "ft")
  train.run(small_config(toy_dir, epochs=1.0), ft)
  exported = builtin.resolve(f"run:{ft}")
  assert builtin.resolve(f"run:{ft}") == exported  # Exported once.
  tree, meta, pp = weights.load(exported)
  state = checkpointing.Checkpoints(ft).restore_tree(int(json.load(open(
      os.path.join(ft, "report", "metrics.json")))["run"]["checkpoint_step"]))
  for a, b in zip(jax.tree.leaves(tree["params"]), jax.tree.leaves(state["params"]["backbone"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert meta["arch"] == "resnet_tiny" and pp.input_size == 32
