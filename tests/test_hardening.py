"""Hostile or careless use: one writer per directory, resumes that would change the result, impossible configs."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, subprocess_env
from jfacediag import workdir_lock
from jfacediag.align import cli as align_cli


def _hold(directory):
  """Another process that takes DIR's lock and sleeps; returns it once the lock is held."""
  code = (f"import time, sys; sys.path.insert(0, {REPO!r}); from jfacediag import workdir_lock; "
          f"workdir_lock.acquire({str(directory)!r}); print('held', flush=True); time.sleep(120)")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=subprocess_env())
  assert proc.stdout.readline().strip() == "held"
  return proc


@pytest.mark.slow
def test_a_second_writer_stops_at_once_and_a_dead_owner_is_taken_over(tmp_path):
  workdir = tmp_path / "wd"
  owner = _hold(workdir)
  try:
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "jfacediag.train", "--config", os.path.join(REPO, "configs/toy.py"),
                        "--workdir", str(workdir)], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                       text=True, timeout=300, check=False)
    print(f"second run: exit {r.returncode} after {time.time() - t:.1f}s: {r.stderr.strip()[-300:]}")
    assert r.returncode == 2 and f"pid {owner.pid} on this machine" in r.stderr and "Traceback" not in r.stderr
    assert not (workdir / "manifest.csv").exists() and not (workdir / "checkpoints").exists()
    with pytest.raises(workdir_lock.Locked, match=f"pid {owner.pid}"):
      workdir_lock.acquire(str(workdir))
  finally:
    owner.send_signal(signal.SIGKILL)
    owner.wait()
  path = workdir_lock.acquire(str(workdir))  # SIGKILLed: the lock is stale and taken over.
  assert path and str(os.getpid()) in open(path, encoding="utf-8").read()
  workdir_lock.release(path)
  assert not os.path.exists(path)


def test_align_refuses_a_dst_that_another_align_writes(tmp_path, capsys):
  (tmp_path / "src" / "a").mkdir(parents=True)
  owner = _hold(tmp_path / "dst")
  try:
    assert align_cli.main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")]) == 2
    assert f"pid {owner.pid}" in capsys.readouterr().err
  finally:
    owner.kill()
    owner.wait()


# == Resuming with other settings ======================================================================================
@pytest.mark.slow
def test_a_resume_that_would_change_the_result_is_refused_naming_the_fields(toy_dir, tmp_path):
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  from jfacediag import train  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path / "wd")
  assert train.run(small_config(toy_dir, epochs=2.0, **{"train.stop_after_steps": 2}), wd) is None  # Interrupted.
  with pytest.raises(ValueError, match=r"(?s)optim\.lr: 0\.003 -> 0\.3.*seed: 0 -> 7.*resume_allow=optim\.lr,seed"):
    train.run(small_config(toy_dir, epochs=2.0, **{"optim.lr": 0.3, "seed": 7}), wd)
  with pytest.raises(ValueError, match=r"model\.backbone: 'resnet_tiny' -> 'resnet18'"):
    train.run(small_config(toy_dir, epochs=2.0, **{"model.backbone": "resnet18"}), wd)
  # Harmless fields and an explicit override go through; extending the run is such an override.
  out = train.run(small_config(toy_dir, epochs=3.0, **{"train.log_every_steps": 5, "resume_allow": ("train.epochs",)}),
                  wd)
  assert out is not None and out["accuracy"]["value"] >= 0


@pytest.mark.parametrize("field,value,says", [
    ("input.batch_size", -4, "input.batch_size = -4: must be an integer >= 1"),
    ("input.batch_size", 0, "input.batch_size = 0"), ("input.eval_batch_size", 0, "input.eval_batch_size = 0"),
    ("train.epochs", 0.0, "train.epochs = 0.0: must be > 0"),
    ("train.checkpoint_every_steps", 0, "train.checkpoint_every_steps = 0"),
    ("train.best_metric", "val_acc", "train.best_metric = 'val_acc'"),
    ("optim.name", "adam", "optim.name = 'adam'"), ("method", "svm,finetuen", "method = 'svm,finetuen'"),
    ("svm.C_grid", ("0.1,x",), "svm.C_grid = (0.1, 'x'): must be a non-empty tuple of numbers > 0")])
def test_impossible_configs_are_refused_before_any_work(field, value, says, toy_dir, tmp_path):
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  from jfacediag import train  # pylint: disable=g-import-not-at-top
  c = small_config(toy_dir)
  node, *path = field.split(".")
  if path:
    c[node][path[0]] = value
  else:
    c[node] = value
  with pytest.raises(ValueError, match=f"impossible:\\n  {re.escape(says)}"):
    train.run(c, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()  # Nothing started: no workdir, no manifest.


def test_data_that_cannot_give_a_result_is_refused(toy_dir, tmp_path):
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  from jfacediag import train  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  one = tmp_path / "one"
  shutil.copytree(toy_dir / "a_circle", one / "a_circle")
  with pytest.raises(ValueError, match="has one class .'a_circle'.: a classifier needs at least two"):
    train.run(small_config(one), str(tmp_path / "w1"))
  assert not (tmp_path / "w1").exists()  # Refused before anything is written.
  with pytest.raises(ValueError, match="input.batch_size=80 is larger than the 72 training images"):
    train.run(small_config(toy_dir, **{"input.batch_size": 80}), str(tmp_path / "w2"))
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    train.run(small_config(toy_dir), str(tmp_path / "file"))


# == Odd images ========================================================================================================
def test_float_tiff_in_0_to_1_is_not_near_black_and_huge_images_are_refused_before_decoding(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jfacediag.data import images  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.full((20, 30), 0.5, np.float32), "F").save(tmp_path / "half.tif")
  assert images.load_rgb(str(tmp_path / "half.tif")).mean() == 128
  Image.new("L", (8000, 8000)).save(tmp_path / "huge.png")  # 64 megapixels, a small file.
  t = time.time()
  with pytest.raises(images.UnreadableImage, match="8000x8000 pixels .64 megapixels. exceed data.max_megapixels=50"):
    images.load_rgb(str(tmp_path / "huge.png"))
  assert time.time() - t < 1.0  # Refused from the header.


def test_eval_padding_decodes_nothing(tmp_path, monkeypatch):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jfacediag.data import images, pipeline  # pylint: disable=g-import-not-at-top
  from jfacediag.models.preprocessing import Preprocessing  # pylint: disable=g-import-not-at-top
  for i in range(3):
    Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
  calls = []
  real = images.load_rgb
  monkeypatch.setattr(images, "load_rgb", lambda p: calls.append(p) or real(p))
  _, it = pipeline.eval_batches(str(tmp_path), [f"{i}.png" for i in range(3)], np.zeros(3, np.int32),
                                Preprocessing(16, 16), 8)
  batch = next(it)
  assert len(calls) == 3 and batch["mask"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
  assert batch["image"][3:].max() == 0
