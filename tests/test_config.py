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
