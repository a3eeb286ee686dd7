"""configs/own.py: a raw folder of one's own photos, aligned once in the backbone's style (data.align='auto'),
then DTL2 and DTL1 with the leakage guard; swapping weights is one argument."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, lfw_folder, subprocess_env
from configs import own
from jfacediag import config_check, confounds, dataset


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """8 real LFW face crops and 8 non-face patches (scikit-image's LFW subset), as a researcher's raw folder."""
  raw = lfw_folder(tmp_path_factory, 8)
  (raw / "README.md").write_text("not a photo")
  return raw


def test_auto_alignment_runs_once_in_the_backbones_style_and_keeps_its_source(photos, tmp_path, capsys):
  config = own.get_config(f"data={photos}")
  assert (config.model.backbone, config.init.checkpoint, config.data.align) == ("sface", "builtin:sface", "auto")
  workdir = str(tmp_path / "run")
  root = dataset.data_dir_for(config, workdir)
  assert root == os.path.join(workdir, "data", "aligned-arcface112")
  info = json.loads(open(os.path.join(root, "align.json"), encoding="utf-8").read())
  assert info["settings"]["style"] == "arcface112" and info["source"] == str(photos)
  assert info["last_run"]["aligned"] + info["last_run"]["no_face"] == 16 and info["last_run"]["ignored"] == 1
  assert "aligning" in capsys.readouterr().out
  # Again: the finished folder is reused, nothing aligned twice.
  assert dataset.data_dir_for(config, workdir) == root
  assert "aligning" not in capsys.readouterr().out
  # A folder jfacediag.align wrote in the backbone's style is used as it is.
  config.data.dir = root
  assert dataset.data_dir_for(config, str(tmp_path / "other")) == root
  assert not (tmp_path / "other").exists()
  # The same workdir for another folder is refused, naming both.
  other = tmp_path / "elsewhere"
  shutil.copytree(photos, other)
  config.data.dir = str(other)
  with pytest.raises(ValueError, match="holds faces aligned from .*raw.*not from data.dir=.*elsewhere"):
    dataset.data_dir_for(config, workdir)
  # Off: the folder as it is.
  config.data.align = ""
  assert dataset.data_dir_for(config, workdir) == str(other)


def test_attributes_named_by_the_photos_reach_their_aligned_crops(tmp_path):
  """metadata= names the user's photos (a.jpg); the run's manifest names the crops (a.png): the aligned folder's
  manifest maps one to the other."""
  (tmp_path / "m.csv").write_text("file,age\nhealthy/a.jpg,child\ndown/b.jpeg,adult\n")
  meta = confounds.load(str(tmp_path / "m.csv"), ["healthy/a.png", "down/b.png"],
                        {"healthy/a.jpg": "healthy/a.png", "down/b.jpeg": "down/b.png"})
  assert meta == {"healthy/a.png": {"age": "child"}, "down/b.png": {"age": "adult"}}


def test_weights_are_one_argument_and_bad_values_are_refused(tmp_path):
  weights = tmp_path / "iresnet50_arcface"
  weights.mkdir()
  (weights / "metadata.json").write_text(json.dumps({"arch": "iresnet50"}))
  c = own.get_config(f"data=/x,weights={weights}")
  assert (c.model.backbone, c.init.checkpoint) == ("iresnet50", str(weights))
  with pytest.raises(ValueError, match="builtin weights are builtin:sface"):
    own.get_config("data=/x,weights=builtin:arcface")
  with pytest.raises(ValueError, match="neither builtin:NAME, run:RUN nor a folder of converted weights"):
    own.get_config(f"data=/x,weights={tmp_path}")
  assert own.get_config("data=/x,method=svm").compare == ()
  c = own.get_config("data=/x")
  c.data.align = "yes"
  with pytest.raises(ValueError, match="data.align"):
    config_check.validate(c)
  c.data.align = "auto"
  c.model.backbone = "ensemble"
  with pytest.raises(ValueError, match="align the folder first"):
    dataset.align_style(c)


@pytest.mark.slow
def test_own_config_on_a_raw_folder_through_the_cli(photos, tmp_path):
  env = subprocess_env(JFACEDIAG_CACHE=str(tmp_path / "cache"))
  proc = subprocess.run([sys.executable, "-m", "jfacediag.train", "--config",
                         os.path.join(REPO, "configs/own.py") + f":data={photos},method=svm",
                         "--workdir", str(tmp_path / "run"), "--config.eval.bootstrap=50",
                         "--config.data.test_fraction=0.5"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  m = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
  assert m["run"]["data_dir"] == str(tmp_path / "run" / "data" / "aligned-arcface112")
  assert m["run"]["alignment"]["style"] == "arcface112" and m["num_test"] == 8
  md = (tmp_path / "run" / "report" / "report.md").read_text()
  assert "Aligned by jfacediag.align (style arcface112" in md
  leak = json.loads((tmp_path / "run" / "leakage.json").read_text())
  assert leak["identity"]["embedder"] == "builtin:sface" and leak["files"] == 16
