import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jfacediag import base_config, models, optim, sharding, steps, svm
from jfacediag.models import classifier, weights


def _model(name="resnet_tiny", k=3):
  return classifier.Classifier(models.get(name).make(), k)


def test_registry_names_and_unknown_backbone():
  assert {"resnet18", "resnet34", "resnet50", "resnet_tiny"} <= set(models.names())
  with pytest.raises(KeyError, match="registered: .*resnet18"):
    models.get("resnet19")


@pytest.mark.parametrize("name,dim", [pytest.param("resnet_tiny", 64, marks=pytest.mark.slow),
                                      pytest.param("resnet18", 512, marks=pytest.mark.slow)])
def test_feature_layer_is_the_input_of_the_head(name, dim):
  model = _model(name)
  v = steps.init_variables(model, 0, 32)
  assert models.get(name).feature_dim == dim
  assert v["params"]["head"]["kernel"].shape == (dim, 3)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  f, logits = jax.jit(lambda v, x: (model.apply(v, x, method="features"), model.apply(v, x)))(v, x)
  np.testing.assert_allclose(logits, f @ v["params"]["head"]["kernel"] + v["params"]["head"]["bias"], atol=1e-5)


def test_resnet50_structure_matches_torchvision_names():
  model = models.get("resnet50").make()
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  p = shapes["params"]
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert p["layer1_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert p["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)  # v1.5: stride sits on the 3x3 conv.
  assert "layer4_2" in p and "layer4_3" not in p
  n = sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(p))
  assert n == 23_508_032  # torchvision resnet50 without fc (25,557,032 - 2,049,000).


@pytest.mark.slow
def test_jitted_sharded_features_equal_eager_forward():
  model = _model()
  v = steps.init_variables(model, 0, 32)
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3)))
  mesh = sharding.make_mesh()
  batch = sharding.global_batch({"image": x, "index": np.arange(4)}, mesh)
  feats, index = steps.make_feature_step(model, mesh)(v, batch["image"], batch["index"])
  with jax.disable_jit():
    eager = model.apply(v, jnp.asarray(x), method="features")
  np.testing.assert_allclose(np.asarray(feats), np.asarray(eager), atol=1e-5, rtol=0)
  assert np.asarray(index).tolist() == [0, 1, 2, 3]


def test_svm_head_equals_the_sklearn_pipeline_and_is_reproducible():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 3, (3, 20))
  labels = np.repeat(np.arange(3), 15)
  feats = centres[labels] + rng.normal(0, 1, (45, 20))
  cfg = base_config.get_config().svm
  fit, pipe = svm.fit(feats, labels, 3, cfg, seed=0)
  margins = feats @ fit.kernel + fit.bias
  np.testing.assert_allclose(margins, pipe.decision_function(feats), atol=1e-4)
  fit2, _ = svm.fit(feats, labels, 3, cfg, seed=0)
  np.testing.assert_array_equal(fit.kernel, fit2.kernel)
  binary = labels < 2
  fitb, pipeb = svm.fit(feats[binary], labels[binary], 2, cfg, seed=0)
  mb = feats[binary] @ fitb.kernel + fitb.bias
  np.testing.assert_allclose(mb[:, 1], pipeb.decision_function(feats[binary]), atol=1e-4)
  assert (mb.argmax(1) == pipeb.predict(feats[binary])).all()


def test_svm_selects_C_on_train_only():
  rng = np.random.default_rng(1)
  labels = np.repeat([0, 1], 12)
  feats = rng.normal(0, 1, (24, 5)) + labels[:, None]
  cfg = base_config.get_config().svm
  cfg.select_C, cfg.C_grid, cfg.cv_folds = True, (0.01, 1.0), 3
  fit, _ = svm.fit(feats, labels, 2, cfg, seed=0)
  assert set(fit.cv) == {"0.01", "1.0"} and fit.C in (0.01, 1.0)


@pytest.mark.slow
def test_weights_round_trip_and_mismatch_diff(tmp_path):
  backbone = models.get("resnet_tiny").make()
  v = backbone.init(jax.random.key(3, impl="rbg"), jnp.zeros((1, 32, 32, 3)))
  meta = {"arch": "resnet_tiny", "preprocessing": models.get("resnet_tiny").preprocessing.to_dict(),
          "source": "test"}
  weights.save(str(tmp_path / "w"), v, meta)
  loaded, meta2, pp = weights.load(str(tmp_path / "w"))
  assert meta2["source"] == "test" and pp == models.get("resnet_tiny").preprocessing
  fresh = backbone.init(jax.random.key(4, impl="rbg"), jnp.zeros((1, 32, 32, 3)))
  merged = weights.merge(fresh["params"], loaded["params"])
  for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(v["params"])):
    np.testing.assert_array_equal(a, b)
  broken = jax.tree.map(np.asarray, loaded["params"])
  broken["extra"] = {"kernel": np.zeros(3)}
  del broken["conv1"]
  broken["bn1"]["scale"] = np.zeros(5)
  with pytest.raises(ValueError) as e:
    weights.merge(fresh["params"], broken)
  msg = str(e.value)
  assert "- conv1/kernel (7, 7, 3, 8)" in msg and "+ extra/kernel (3,)" in msg and "! bn1/scale" in msg
  kept = weights.merge(fresh["params"], {k: v for k, v in broken.items() if k != "extra"} | {
      "bn1": loaded["params"]["bn1"]}, dont_load="^conv1/")
  np.testing.assert_array_equal(kept["conv1"]["kernel"], fresh["params"]["conv1"]["kernel"])


@pytest.mark.slow
def test_freeze_regex_and_schedules():
  model = _model()
  params = steps.init_variables(model, 0, 32)["params"]
  labels = optim.trainable_labels(params, "backbone/(conv1|bn1)")
  assert labels["backbone"]["conv1"]["kernel"] == "freeze" and labels["head"]["kernel"] == "train"
  with pytest.raises(ValueError, match="matches no parameter"):
    optim.trainable_labels(params, "backbone/conv9")
  cfg = base_config.get_config().optim
  cfg.warmup_epochs, cfg.lr = 1.0, 0.1
  s = optim.schedule(cfg, steps_per_epoch=10, total_steps=100)
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(0.1) and float(s(100)) == pytest.approx(0.0)
  tx = optim.make(ml_collections.ConfigDict({**cfg.to_dict(), "freeze": "backbone/conv1"}), params, s)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates["backbone"]["conv1"]["kernel"]).max()) == 0.0
