"""Every command the README and the pages of docs/ show parses against the program it names, so they cannot drift.

Commands are taken from their code blocks and inline code: `python -m jfacediag.*`, `python tools/*.py` and
`./launch.sh`. train, cv and aot commands go through the same checks that run before every start (the config file, every
--config.* field and value, the backbone, the flags, a remote workdir with generated data); argparse programs parse
their arguments; launch.sh runs with --dry-run. Placeholders: CFG is configs/toy.py, N and K are 2, `...` is dropped
(for launch.sh tpu: the same TPU settings), and [optional flags] are checked too. Converted weights that a command
names (configs/own.py:weights=DIR) are stood in for by a folder holding their metadata.json.
"""
import importlib
import importlib.util
import os
import re
import shlex
import subprocess

import pytest

from conftest import REPO
from jfacediag import cli_front

LAUNCH_TPU = ["--name", "jfd", "--project", "my-proj", "--zone", "us-central2-b"]
ARGPARSE = {"jfacediag.align": "jfacediag.align.cli", "jfacediag.embed": "jfacediag.embed",
            "jfacediag.predict": "jfacediag.predict", "jfacediag.data.prepare": "jfacediag.data.prepare",
            "jfacediag.build": "jfacediag.build",
            "jfacediag.report": "jfacediag.report", "jfacediag.flops": "jfacediag.flops",
            "jfacediag.bench": "jfacediag.bench", "jfacediag.match": "jfacediag.match",
            "tools/convert_weights.py": "jfacediag.convert.cli"}
TOOLS_WITH_PARSE = ("tools/compare_upstream.py", "tools/bench_align.py", "tools/bench_match.py",
                    "tools/bench_mtcnn.py", "tools/bench_convs.py", "tools/bench_xla_options.py",
                    "tools/same_photo_null.py")
_START = re.compile(r"(python -m jfacediag\.[\w.]+|python tools/\w+\.py|\./launch\.sh)\b")


DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
                              if f.endswith(".md"))


def readme_commands():
  text = "\n".join(open(os.path.join(REPO, d), encoding="utf-8").read() for d in DOCS)
  chunks = [b.replace("\\\n", " ") for b in re.findall(r"```\n(.*?)```", text, re.S)]
  chunks += [c.replace("\n", " ") for c in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))]
  out = []
  for chunk in chunks:
    for line in chunk.splitlines():
      line = re.sub(r"\s+#.*$", "", line)
      loop = re.match(r"for (\w+) in (\S+)[^;]*; do (.*); done", line.strip())
      if loop:
        line = loop.group(3).replace(f"${loop.group(1)}", loop.group(2))
      for seg in re.split(r"&&|;", line):
        m = _START.search(seg)
        if m and seg.strip().startswith(m.group(1)):
          out.append(seg.strip())
  return sorted(set(out))


def _argv(cmd, tmp_path=None):
  cmd = re.sub(r"\[([^\]]*)\]", r"\1", cmd)  # Optional flags are checked too.
  words = [w for w in shlex.split(cmd) if w != "..."]
  words = [{"CFG": "configs/toy.py", "N": "2", "K": "2"}.get(w, w) for w in words]
  if tmp_path is not None:
    words = [_stand_in_weights(w, tmp_path) for w in words]
  return words


def _stand_in_weights(word, tmp_path):
  """configs/own.py:...,weights=weights/x -> the same with a folder holding x's metadata.json (an iresnet50)."""
  m = re.search(r"weights=([^,]+)", word)
  if not word.startswith("configs/own.py:") or not m or m.group(1).startswith(("builtin:", "run:")):
    return word
  stand_in = tmp_path / "weights"
  stand_in.mkdir(exist_ok=True)
  (stand_in / "metadata.json").write_text('{"arch": "iresnet50"}')
  return word.replace(m.group(0), f"weights={stand_in}")


COMMANDS = readme_commands()


def test_the_readme_has_commands_of_every_kind():
  kinds = {_START.search(c).group(1) for c in COMMANDS}
  assert {"python -m jfacediag.train", "python -m jfacediag.cv", "python -m jfacediag.align", "./launch.sh",
          "python tools/convert_weights.py", "python -m jfacediag.predict"} <= kinds, kinds
  assert len(COMMANDS) >= 30


@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_parses(cmd, tmp_path, monkeypatch):
  argv = _argv(cmd, tmp_path)
  monkeypatch.chdir(REPO)  # README commands run from the repository root.
  if argv[0] == "./launch.sh":
    if argv[1] == "tpu" and len(argv) == 3:
      argv += LAUNCH_TPU
    (tmp_path / "hosts.txt").write_text("gpu-a\ngpu-b\n")
    r = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "--dry-run", *argv[1:]], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "SLURM_"))})
    if "--" not in argv and "no training flags" in r.stderr:  # A target named in the prose: launch.sh has it.
      usage = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), "--help"], capture_output=True, text=True,
                             timeout=60).stdout
      target = [w for w in argv[1:] if w not in LAUNCH_TPU]
      assert all(re.search(rf"\b{re.escape(w)}\b", usage) for w in target), (target, usage)
      return
    assert r.returncode == 0, r.stderr
    if "--" in argv:  # The training flags it passes on.
      train_args = argv[argv.index("--") + 1:]
      cli_front.check_command("train", cli_front.underscores(train_args, cli_front.flag_names("train")))
    return
  program, args = (argv[2], argv[3:]) if argv[1] == "-m" else (argv[1], argv[2:])
  if not args:  # A program named in the prose: it exists.
    assert (importlib.util.find_spec(program) if argv[1] == "-m" else os.path.isfile(os.path.join(REPO, program))), cmd
    return
  if program in ("jfacediag.train", "jfacediag.cv", "jfacediag.aot"):
    prog = program.split(".")[1]
    if set(args) & set(cli_front.HELP_FLAGS):
      assert "--config FILE[:ARG]" in cli_front.help_text(prog, "")
    else:
      cli_front.check_command(prog, cli_front.underscores(args, cli_front.flag_names(prog)))
    return
  if set(args) & {"--help", "-h"}:  # Prints its usage; the program exists.
    assert importlib.util.find_spec(ARGPARSE.get(program, "jfacediag")) or os.path.isfile(os.path.join(REPO, program))
    return
  if program in ARGPARSE:
    importlib.import_module(ARGPARSE[program]).parse(args)  # argparse exits (a failure here) on a bad flag.
  elif program in TOOLS_WITH_PARSE:
    spec = importlib.util.spec_from_file_location("_tool", os.path.join(REPO, program))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.parse(args)
  else:
    raise AssertionError(f"{cmd}: no parser known for {program} (add it to ARGPARSE or TOOLS_WITH_PARSE)")
