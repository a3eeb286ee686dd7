"""End-to-end runs of jfacediag.train on generated folders (tiny backbone, 32 px)."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import badfiles
from conftest import REPO, restore_raw as _restore_raw, small_config, subprocess_env
from jfacediag import checkpointing, metric_writer, models, train
from jfacediag.data import toy
from jfacediag.models import weights

METRIC_KEYS = {"num_test", "classes", "score_type", "accuracy", "per_class", "macro", "roc_auc", "confusion_matrix",
               "bootstrap", "skipped_files", "run"}
REPORT_FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png", "curves.png", "report.md")


def final_params(workdir):
  """The params of the latest checkpoint in workdir, as numpy leaves."""
  ck = checkpointing.Checkpoints(str(workdir))
  step = ck.latest_step()
  state = _restore_raw(ck, step)
  ck.close()
  return step, [np.asarray(x) for x in jax.tree.leaves(state["params"])]


@pytest.mark.slow
def test_end_to_end_writes_every_report_file(toy_dir, tmp_path):
  cfg = small_config(toy_dir, epochs=2.0, **{"data.val_fraction": 0.2, "train.report_checkpoint": "best"})
  result = train.run(cfg, str(tmp_path))
  rep = tmp_path / "report"
  for name in REPORT_FILES:
    assert (rep / name).stat().st_size > 0, name
  assert not (rep / "roc.png").exists()  # Three classes: no binary ROC plot.
  m = json.loads((rep / "metrics.json").read_text())
  assert METRIC_KEYS <= set(m) and m["num_test"] == 36 and m == json.loads(json.dumps(result | {
      "skipped_files": [], "run": m["run"]}))
  for cls in m["classes"]:
    assert {"precision", "recall", "specificity", "f1", "support"} <= set(m["per_class"][cls])
  lines = (rep / "predictions.csv").read_text(encoding="utf-8").splitlines()
  assert len(lines) == 37 and lines[0].startswith("file,true,predicted,correct,score_")
  assert (tmp_path / "manifest.csv").exists() and os.listdir(tmp_path / "tensorboard")
  assert os.listdir(tmp_path / "checkpoints")
  hist = metric_writer.read_history(str(tmp_path))
  assert any("val_accuracy" in h for h in hist) and any("train_loss" in h for h in hist)
  assert m["run"]["checkpoint"] == "best"
  best = max((h["val_accuracy"], h["step"]) for h in hist if "val_accuracy" in h)
  assert m["run"]["checkpoint_step"] == best[1]
  again = train.run(cfg, str(tmp_path))  # A finished workdir: re-evaluated from its checkpoints, same numbers.
  assert again["accuracy"] == result["accuracy"]


@pytest.mark.parametrize("method", [pytest.param("finetune", marks=pytest.mark.slow), "svm"])
def test_learns_separable_classes(toy_dir, tmp_path, method):
  cfg = small_config(toy_dir, method=method, epochs=8.0)  # svm: random resnet18 features (see configs/toy.py).
  result = train.run(cfg, str(tmp_path))
  assert result["accuracy"]["value"] >= 0.9, result["accuracy"]
  if method == "svm":
    assert result["score_type"] == "svm_margin"


@pytest.mark.slow
def test_binary_run_writes_roc(tmp_path):
  data = tmp_path / "data"
  toy.make_folder(str(data), num_classes=2, per_class=36, size=40, seed=2)
  cfg = small_config(data, method="svm", **{"svm.select_C": False})
  result = train.run(cfg, str(tmp_path / "wd"))
  assert (tmp_path / "wd" / "report" / "roc.png").exists()
  assert result["positive_class"] == "b_square" and result["roc_auc"]["value"] > 0.9


@pytest.mark.slow
def test_resume_is_exact(toy_dir, tmp_path):
  """N steps, stop, resume for N more == 2N straight steps (to 1e-6), history included."""
  kw = {"model.head_dropout": 0.2, "data.val_fraction": 0.2}  # Dropout and val checkpoints exercise RNG + policy.
  straight = small_config(toy_dir, epochs=3.0, **kw)
  train.run(straight, str(tmp_path / "straight"))
  total, want = final_params(tmp_path / "straight")
  half = total // 2
  assert train.run(small_config(toy_dir, epochs=3.0, **kw, **{"train.stop_after_steps": half}),
                   str(tmp_path / "resumed")) is None
  assert final_params(tmp_path / "resumed")[0] == half
  train.run(small_config(toy_dir, epochs=3.0, **kw), str(tmp_path / "resumed"))
  step, got = final_params(tmp_path / "resumed")
  assert step == total
  for a, b in zip(want, got):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  def losses(d):
    return [h["train_loss"] for h in metric_writer.read_history(str(d)) if "train_loss" in h]
  np.testing.assert_allclose(losses(tmp_path / "straight"), losses(tmp_path / "resumed"), atol=1e-6)


def _cli(workdir, data, *extra):
  return [sys.executable, "-m", "jfacediag.train", "--config", f"{REPO}/configs/toy.py", "--workdir", str(workdir),
          f"--config.data.dir={data}", "--config.data.train_per_class=24", "--config.data.test_per_class=12",
          "--config.data.val_fraction=0.0", "--config.model.input_size=32", "--config.input.batch_size=16",
          "--config.train.checkpoint_every_steps=1000", "--config.eval.bootstrap=0", *extra]


def _started(cmd, hist, lines=10):
  """A training process, once its history holds `lines` lines (mid-run)."""
  proc = subprocess.Popen(cmd, env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if hist.exists() and len(hist.read_text().splitlines()) >= lines:
      break
    time.sleep(0.05)
  return proc


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resumes_exactly(toy_dir, tmp_path):
  epochs = "--config.train.epochs=20"  # 72 train images / 16 = 4.5 steps an epoch, 90 steps.
  subprocess.run(_cli(tmp_path / "straight", toy_dir, epochs), check=True, env=subprocess_env(), cwd=REPO,
                 capture_output=True, timeout=600)
  proc = _started(_cli(tmp_path / "killed", toy_dir, epochs), tmp_path / "killed" / "history.jsonl")
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0].decode()
  assert proc.returncode == 143, out[-2000:]
  stopped, _ = final_params(tmp_path / "killed")
  assert 10 <= stopped < 90 and stopped % 4.5 != 0, stopped  # Saved where it was, mid-epoch.
  subprocess.run(_cli(tmp_path / "killed", toy_dir, epochs), check=True, env=subprocess_env(), cwd=REPO,
                 capture_output=True, timeout=600)
  (s1, want), (s2, got) = final_params(tmp_path / "straight"), final_params(tmp_path / "killed")
  assert s1 == s2 == 90
  for a, b in zip(want, got):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_ctrl_c_saves_like_sigterm_and_says_so_in_one_line(toy_dir, tmp_path):
  proc = _started(_cli(tmp_path / "wd", toy_dir, "--config.train.epochs=20"), tmp_path / "wd" / "history.jsonl")
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=300)[0].decode()
  print(out[-1500:])
  assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
  stopped, _ = final_params(tmp_path / "wd")
  assert 10 <= stopped < 90
  assert f"Interrupted at step {stopped}/90; checkpoint saved. Rerun the same command to resume." in out
  leftovers = [p for p in (tmp_path / "wd" / "checkpoints").iterdir() if not p.name.isdigit()]
  assert not [p for p in leftovers if "tmp" in p.name], leftovers  # No half-written orbax folder.


def _kill_when(proc, ready, deadline=300):
  end = time.time() + deadline
  while time.time() < end and proc.poll() is None:
    if ready():
      proc.kill()  # SIGKILL: no handler runs, nothing is flushed.
      proc.wait()
      return True
    time.sleep(0.01)
  proc.kill()
  proc.wait()
  return False


@pytest.mark.slow
def test_sigkill_early_mid_run_and_during_a_checkpoint_save_resumes_exactly(toy_dir, tmp_path):
  """Three SIGKILLs: before the first checkpoint, mid-run, and while orbax writes a checkpoint (its temporary
  folder exists). Each rerun of the same command ends with the parameters of a run that never stopped."""
  flags = ("--config.train.epochs=9", "--config.train.checkpoint_every_steps=5")  # 72 / 16 = 4.5 steps an epoch.
  run = lambda wd: subprocess.run(_cli(wd, toy_dir, *flags), check=True, env=subprocess_env(), cwd=REPO,  # noqa
                                  capture_output=True, timeout=600)
  run(tmp_path / "straight")
  total, want = final_params(tmp_path / "straight")
  ckpt = lambda wd: wd / "checkpoints"  # noqa: E731
  points = {
      "early": lambda wd: (wd / "manifest.csv").exists(),  # Split written, nothing trained yet.
      "mid": lambda wd: (wd / "history.jsonl").exists() and len((wd / "history.jsonl").read_text().splitlines()) >= 17,
      "saving": lambda wd: ckpt(wd).exists() and any("tmp" in p.name for p in ckpt(wd).iterdir()),
  }
  for name, ready in points.items():
    wd = tmp_path / name
    proc = subprocess.Popen(_cli(wd, toy_dir, *flags), env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert _kill_when(proc, lambda ready=ready, wd=wd: ready(wd)), f"{name}: the run ended before the kill point"
    run(wd)  # The same command again.
    step, got = final_params(wd)
    assert step == total, name
    for a, b in zip(want, got):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=0, err_msg=name)


SHARDED = """
import json, sys
sys.path.insert(0, {repo!r})
import jax
from conftest import small_config
from jfacediag import metric_writer, train
cfg = small_config({data!r}, epochs=2.0, **{{"input.eval_batch_size": 32}})
train.run(cfg, {workdir!r})
print(json.dumps([jax.device_count(), [h["train_loss"] for h in metric_writer.read_history({workdir!r})
                  if "train_loss" in h]]))
"""


@pytest.mark.slow
def test_eight_devices_match_one_device(toy_dir, tmp_path):
  runs = {}
  for n in (1, 8):
    script = SHARDED.format(repo=os.path.join(REPO, "tests"), data=str(toy_dir), workdir=str(tmp_path / f"d{n}"))
    env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    r = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs[n] = json.loads(r.stdout.strip().splitlines()[-1])
  assert runs[1][0] == 1 and runs[8][0] == 8
  assert len(runs[1][1]) == len(runs[8][1]) == 9
  np.testing.assert_allclose(runs[1][1], runs[8][1], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_bad_files_are_listed_and_readable_ones_used(tmp_path):
  data = tmp_path / "data"
  toy.make_folder(str(data), num_classes=3, per_class=16, size=40, seed=3)
  badfiles.write_all(str(data / "a_circle"))
  cfg = small_config(data, epochs=1.0, **{"data.split": "fraction", "data.test_fraction": 0.3})
  result = train.run(cfg, str(tmp_path / "wd"))
  m = json.loads((tmp_path / "wd" / "report" / "metrics.json").read_text(encoding="utf-8"))
  assert sorted(s["file"] for s in m["skipped_files"]) == sorted(f"a_circle/{n}" for n in badfiles.UNREADABLE)
  manifest = (tmp_path / "wd" / "manifest.csv").read_text(encoding="utf-8")
  for name in badfiles.READABLE:
    line = next(r for r in manifest.splitlines() if r.startswith(f"a_circle/{name},"))
    assert line.split(",")[2] in ("train", "test"), line
  assert result["num_test"] == sum(r.split(",")[2] == "test" for r in manifest.splitlines()[1:])
  assert "truncated.jpg" in (tmp_path / "wd" / "report" / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_init_checkpoint_loads_into_backbone(toy_dir, tmp_path):
  spec = models.get("resnet_tiny")
  src = spec.make().init(jax.random.key(5, impl="rbg"), np.zeros((1, 32, 32, 3), np.float32))
  pp = spec.preprocessing.to_dict() | {"mean": [127.5] * 3, "std": [127.5] * 3}
  weights.save(str(tmp_path / "w"), src, {"arch": "resnet_tiny", "preprocessing": pp, "source": "unit test"})
  cfg = small_config(toy_dir, method="svm", **{"init.checkpoint": str(tmp_path / "w"), "svm.select_C": False,
                                              "model.backbone": "resnet_tiny"})
  train.run(cfg, str(tmp_path / "wd"))
  m = json.loads((tmp_path / "wd" / "report" / "metrics.json").read_text())
  assert m["run"]["preprocessing"]["mean"] == [127.5] * 3  # The weights' preprocessing, not the registry's.
  ck = checkpointing.Checkpoints(str(tmp_path / "wd"))
  state = _restore_raw(ck, 0)
  ck.close()
  np.testing.assert_array_equal(state["params"]["backbone"]["conv1"]["kernel"], src["params"]["conv1"]["kernel"])
  bad = small_config(toy_dir, **{"init.checkpoint": str(tmp_path / "w"), "model.backbone": "resnet18"})
  with pytest.raises(ValueError, match="holds 'resnet_tiny' weights"):
    train.run(bad, str(tmp_path / "wd2"))
  other = small_config(toy_dir, **{"init.checkpoint": str(tmp_path / "w"), "model.backbone": "resnet_tiny"})
  with pytest.raises(ValueError, match="method: 'svm' -> 'finetune'"):
    train.run(other, str(tmp_path / "wd"))  # A finetune config on the svm workdir: refused, nothing overwritten.
