import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from jfacediag import base_config


def test_locked_config_names_the_valid_fields():
  c = base_config.get_config()
  c.lock()
  with pytest.raises(AttributeError, match=r'"lrr" does not exist.*Did you mean "lr"'):
    c.optim.lrr = 1.0


def test_parse_arg_types_and_errors():
  a = base_config.parse_arg("method=svm,runlocal", method="finetune", runlocal=False, n=3)
  assert (a.method, a.runlocal, a.n) == ("svm", True, 3)
  with pytest.raises(ValueError, match="Unknown config argument 'metod'"):
    base_config.parse_arg("metod=svm", method="finetune")


def test_misspelt_command_line_field_fails_with_its_name(tmp_path):
  cmd = [sys.executable, "-m", "jfacediag.train", "--config", f"{REPO}/configs/toy.py",
         "--workdir", str(tmp_path / "wd"), "--config.optim.lrr=1e-3"]
  r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
  assert r.returncode != 0
  assert "lrr" in r.stderr and "lr" in r.stderr
  assert not (tmp_path / "wd").exists()  # Failed before doing anything.


def test_every_config_file_loads_and_names_its_command():
  import glob, importlib.util  # pylint: disable=g-import-not-at-top,multiple-imports
  files = sorted(glob.glob(f"{REPO}/configs/**/*.py", recursive=True))
  assert files
  for path in files:
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "python -m jfacediag" in mod.__doc__ and "Expected" in mod.__doc__, path
    c = mod.get_config()
    assert set(c.keys()) == set(base_config.get_config().keys()), path


def test_dsf_configs_cover_every_row_of_tables_3_to_6():
  import glob, importlib.util, os  # pylint: disable=g-import-not-at-top,multiple-imports
  from jfacediag import models, paper  # pylint: disable=g-import-not-at-top
  files = {os.path.basename(p)[:-3]: p for p in glob.glob(f"{REPO}/configs/dsf/*.py")}
  assert set(files) == set(paper.ROWS)
  rows = {t: [n for n, r in paper.ROWS.items() if t in {r.get("binary", {}).get("table"),
                                                       r.get("multi", {}).get("table")}] for t in "3456"}
  # Table 3: 2 DSIFT + 6 fine-tuned; Table 4: 6 DTL2; Table 5: all 14 of them on 5 classes; Table 6: 4 VGGFace2.
  assert [len(rows[t]) for t in "3456"] == [8, 6, 14, 4]
  assert sum("table" not in str(r) for r in paper.ROWS.values()) == 6  # The modern rows.
  for name, path in files.items():
    spec = importlib.util.spec_from_file_location("cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = paper.ROWS[name]
    for task in ("binary", "multi"):
      c = mod.get_config(f"task={task}")
      assert c.eval.paper_row == f"{name}/{task}" and c.method == row["method"]
      assert len(c.data.classes.split(",")) == (2 if task == "binary" else 5)
      if row["method"] == "finetune":
        assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 5e-5, 0.9, 5e-4)
      if row["weights"]:
        assert models.get(c.model.backbone) and c.init.checkpoint
      if task in row:  # The docstring names the paper's number for this row.
        assert f"acc {row[task]['acc']}" in mod.__doc__, (name, task)
    assert "convert_weights.py" in mod.__doc__ or "builtin" in mod.__doc__ or row["method"] == "dsift", name
