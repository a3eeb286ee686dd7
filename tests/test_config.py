import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from jfacediag import base_config, cli_front


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


@pytest.mark.parametrize("args,says", [
    (["--config.optim.lrr=1e-3"], "--config.optim.lrr: no such config field; did you mean optim.lr?"),
    (["--config.train.epoch=3"], "did you mean train.epochs"),
    (["--config.optim.learning_rate=0.01"], "optim holds"),
    (["--config.train.epochs=abc"], "--config.train.epochs=abc: expected float"),
    (["--config.model.backbone=resnet51"], "not a registered backbone; did you mean resnet50"),
])
def test_command_line_mistakes_get_one_line_and_exit_2(args, says, tmp_path):
  cmd = [sys.executable, "-m", "jfacediag.train", "--config", f"{REPO}/configs/toy.py",
         "--workdir", str(tmp_path / "wd"), *args]
  r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
  assert not (tmp_path / "wd").exists()  # Failed before doing anything.


def test_config_file_mistakes_and_help(tmp_path):
  def cli(*args, module="train", cwd=REPO):
    return subprocess.run([sys.executable, "-m", f"jfacediag.{module}", *args], capture_output=True, text=True,
                          env=subprocess_env(), cwd=cwd, timeout=300)
  r = cli("--config", "configs/toy.py", cwd=tmp_path)  # Relative to the repository, run from elsewhere.
  assert r.returncode == 2 and f"{REPO}/configs/toy.py exists: run from {REPO}" in r.stderr
  r = cli("--config", "configs/toy.py:mthod=svm")
  assert r.returncode == 2 and "Unknown config argument 'mthod'" in r.stderr and len(r.stderr.splitlines()) == 1
  for module in ("train", "cv"):
    r = cli("--help", module=module)
    assert r.returncode == 0 and "--workdir DIR" in r.stdout and "--config FILE" in r.stdout
    for _, field, _, _ in cli_front.config_docs():  # Every field of base_config.py, generated from its source.
      assert f"    {field} = " in r.stdout, field
  assert "--max-folds K" in r.stdout and "optim.lr = 0.01" in r.stdout and "Peak learning rate" in r.stdout


def test_help_lists_the_flags_the_programs_define():
  import re  # pylint: disable=g-import-not-at-top
  for prog, files in (("train", ["train.py"]), ("cv", ["cv.py"])):
    source = "".join(open(f"{REPO}/jfacediag/{f}", encoding="utf-8").read() for f in files)
    defined = set(re.findall(r'DEFINE_\w+\(\s*"(\w+)"', source))
    listed = {name.split()[0].lstrip("-").split("=")[0].split(".")[0].replace("-", "_")
              for name, _ in cli_front.FLAGS[prog]}
    assert defined == listed, (prog, defined, listed)
  assert len(cli_front.config_docs()) == len(_leaves(base_config.get_config()))  # Every field documented in --help.


def _leaves(c, prefix=""):
  out = []
  for k, v in c.items():
    out += _leaves(v, f"{prefix}{k}.") if hasattr(v, "items") else [f"{prefix}{k}"]
  return out


def test_argparse_tools_take_both_spellings():
  assert cli_front.dashes(["--min_prob", "0.5", "--mtcnn_weights=w", "--", "--keep_this"]) == [
      "--min-prob", "0.5", "--mtcnn-weights=w", "--", "--keep_this"]
  assert cli_front.underscores(["--max-folds=2", "--inner-val", "0.1", "--config.a-b=1", "--no-keep-checkpoints"],
                               {"max_folds", "inner_val", "keep_checkpoints"}) == [
      "--max_folds=2", "--inner_val", "0.1", "--config.a-b=1", "--nokeep_checkpoints"]


@pytest.mark.parametrize("module, typo, says", [
    ("jfacediag.predict", ["--run", "r", "--imgaes", "a.jpg"], "did you mean --images for --imgaes?"),
    ("jfacediag.match", ["--gallery", "g", "--out", "o", "--embeders", "x"],
     "did you mean --embedders for --embeders?"),
    ("jfacediag.align.cli", ["--src", "a", "--dst", "b", "--stlye", "arcface112"], "did you mean --style"),
    ("jfacediag.embed", ["--weights", "w", "--images", "i", "--out", "o.npz", "--tta=flip"], "unrecognized arguments"),
    ("jfacediag.report", ["--workdirs"], "--help lists the flags"),
])
def test_argparse_mistakes_are_one_line_with_the_closest_flag(module, typo, says, capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    importlib.import_module(module).parse(typo)
  err = capsys.readouterr().err.strip()
  print(err)
  assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and says in err


def test_every_config_file_loads_and_names_its_command():
  import glob
  import importlib.util  # pylint: disable=g-import-not-at-top,multiple-imports
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
  import glob
  import importlib.util
  import os  # pylint: disable=g-import-not-at-top,multiple-imports
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
      assert len(c.data.classes) == (2 if task == "binary" else 5)
      if row["method"] == "finetune":
        assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 5e-5, 0.9, 5e-4)
      if row["weights"]:
        assert models.get(c.model.backbone) and c.init.checkpoint
      if task in row:  # The docstring names the paper's number for this row.
        assert f"acc {row[task]['acc']}" in mod.__doc__, (name, task)
    assert "convert_weights.py" in mod.__doc__ or "builtin" in mod.__doc__ or row["method"] == "dsift", name
