"""Shared helpers: small generated folders and configs sized for 2 CPU cores."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `configs` is a folder of files, not an installed package.

import jfacediag  # noqa: E402,F401  (sets the TF logging variables before anything imports TF)


def small_config(data_dir, method="finetune", epochs=6.0, size=32, **kw):
  """The toy config, shrunk: 32 px on a folder of ~24 images per class."""
  from configs import toy  # pylint: disable=g-import-not-at-top
  c = toy.get_config(f"method={method}")
  c.data.generate = ""
  c.data.dir = str(data_dir)
  c.data.split = "per_class"
  c.data.train_per_class = 24
  c.data.test_per_class = 12
  c.data.val_fraction = 0.0
  c.model.input_size = size
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.train.epochs = epochs
  c.eval.bootstrap = 200
  for key, value in kw.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
  from jfacediag.data import toy  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("toy")
  toy.make_folder(str(root), num_classes=3, per_class=36, size=40, seed=1)
  return root


def subprocess_env(**extra):
  env = dict(os.environ)
  env.update({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}, **extra)
  return env
