"""What the absl entry points (train, cv) do before JAX and TensorFlow load: `--help` in about a second, and the
common command-line mistakes in one line with exit code 2.

- `--help` / `-h` / `--helpfull`: the command's flags and every config field with its default and documentation,
  read from jfacediag/base_config.py's own source (so the list cannot go stale); exit 0.
- `--config FILE[:ARG]`: a missing file (with the path it was looked for at, and the same name under the repository
  when that exists), a `get_config` that rejects ARG, a misspelt `--config.a.b=v` field (with the closest valid
  names), a value of the wrong type, and an unknown `model.backbone` are reported in one line.
- Flag spelling: `--max-folds` and `--max_folds` are the same flag (absl wants underscores; argparse tools accept
  both spellings through `dashes`).
"""
import argparse
import difflib
import importlib.util
import io
import os
import re
import sys
import textwrap
import tokenize

import ml_collections

from jfacediag import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base_config.py")

FLAGS = {
    "train": [("--config FILE[:ARG]", "config file (configs/*.py); ARG is passed to its get_config (a=1,b=x)"),
              ("--config.SECTION.FIELD=VALUE", "override one config field (the fields are listed below)"),
              ("--workdir DIR", "split, checkpoints, logs and report (default: runs/<config name>); a local path or "
                                "gs://; rerunning on it resumes")],
    "cv": [("--config FILE[:ARG]", "config file, as for jfacediag.train"),
           ("--config.SECTION.FIELD=VALUE", "override one config field (listed below)"),
           ("--workdir DIR", "the CV directory (default: runs/cv-<config name>); folds in DIR/folds/"),
           ("--folds K", "k of the stratified k-fold (default 5)"),
           ("--repeats R", "repetitions with different fold assignments, split_seed + r (default 10)"),
           ("--parallel N", "processes running folds at once (default 1)"),
           ("--inner-val F", "DTL1: fraction of each training fold held out to pick the epoch and calibrate "
                             "(default 0.2)"),
           ("--max-folds K", "run at most K pending folds, then stop (0 = all; time-sliced jobs)"),
           ("--keep-checkpoints", "keep each fold's checkpoints after its report is written")],
    "aot": [("--config FILE[:ARG]", "config file, as for jfacediag.train"),
            ("--config.SECTION.FIELD=VALUE", "override one config field (listed below)"),
            ("--topology NAME", "Cloud TPU topology to compile for (v5e:2x4, v4:2x2x1, v6e:16x16, ...) or its "
                                "accelerator type (v5litepod-8, v4-8, ...)"),
            ("--max-batch", "also find the largest per-chip train batch that fits"),
            ("--json FILE", "where to write the report (default runs/preflight/<config>-<topology>.json)"),
            ("--train-images N", "training images, for the learning-rate schedule's length only (default 1000)"),
            ("--classes N", "classes of the head (default: data.classes, else 2)")],
}
HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


class Error(ValueError):
  """A command-line mistake; the message is the one line printed."""


def config_docs(path=BASE_CONFIG):
  """[(section, field, default source, documentation)] in base_config.py order, from its source text."""
  out, section, pending = [], "", []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for line in lines:
    s = line.strip()
    head = re.match(r"# == (.+?) =+", s)
    if head:
      section, pending = head.group(1), []
      continue
    if s.startswith("#"):
      pending.append(s.lstrip("# ").strip())
      continue
    m = re.match(r"c\.([\w.]+) = (.+)", s)
    if m and "ConfigDict()" not in m.group(2):
      value, _, comment = _split_comment(m.group(2))
      out.append((section or "General", m.group(1), value.strip(), " ".join(pending + [comment]).strip()))
      pending = []
    elif not s:
      pending = []
  return out


def _split_comment(text):
  """(code, '#', comment) of one line of Python, respecting strings."""
  try:
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
      if tok.type == tokenize.COMMENT:
        col = tok.start[1]
        return text[:col], "#", text[col + 1:].strip()
  except tokenize.TokenError:
    pass
  return text, "", ""


def help_text(prog, doc):
  lines = [doc.strip(), "", f"usage: python -m jfacediag.{prog} [flags]", "", "flags:"]
  for name, what in FLAGS[prog]:
    lines.append(textwrap.fill(what, 118, initial_indent=f"  {name:30s} ", subsequent_indent=" " * 33))
  lines += ["", "config fields (jfacediag/base_config.py; config files change a few, --config.x.y=v one):"]
  section = None
  for sec, field, default, what in config_docs():
    if sec != section:
      lines += ["", f"  [{sec}]"]
      section = sec
    lines.append(f"    {field} = {default}")
    if what:
      lines.append(textwrap.fill(what, 118, initial_indent=" " * 8, subsequent_indent=" " * 8))
  return "\n".join(lines)


def _config_arg(argv):
  """(value of --config, index) or (None, None)."""
  for i, a in enumerate(argv):
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1], i
    if a.startswith("--config="):
      return a[len("--config="):], i
  return None, None


def load_config(spec):
  """Runs get_config(arg) of `file[:arg]` as absl's config_flags does; one-line errors."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    here = os.path.abspath(path)
    under = os.path.join(REPO, path)
    hint = (f"; {under} exists: run from {REPO} or pass that path" if not os.path.isabs(path) and
            os.path.isfile(under) else "")
    raise Error(f"--config {path}: no such file (looked for {here}){hint}")
  mod_spec = importlib.util.spec_from_file_location("_jfacediag_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  sys.path.insert(0, REPO)  # configs import jfacediag (and configs/dsf import jfacediag.paper).
  try:
    mod_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (a config file that does not run: say which, in one line)
    raise Error(f"--config {path} does not load: {type(e).__name__}: {e}") from e
  finally:
    sys.path.remove(REPO)
  if not hasattr(module, "get_config"):
    raise Error(f"--config {path} defines no get_config()")
  try:
    return module.get_config(arg) if arg else module.get_config()
  except (ValueError, TypeError, KeyError) as e:
    raise Error(f"--config {spec}: {str(e).splitlines()[0]}") from e


def _leaves(node, prefix=""):
  out = {}
  for k, v in node.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_leaves(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_overrides(config, argv):
  """Every --config.a.b=v names an existing field and a value of its type."""
  fields = _leaves(config)
  for a in argv:
    if not a.startswith("--config."):
      continue
    key, eq, value = a[len("--config."):].partition("=")
    if key not in fields:
      section, _, last = key.rpartition(".")
      siblings = {f.rpartition(".")[2]: f for f in fields if f.rpartition(".")[0] == section}
      close = [siblings[n] for n in difflib.get_close_matches(last, siblings, n=3, cutoff=0.6)]
      close = close or difflib.get_close_matches(key, fields, n=3, cutoff=0.75)
      raise Error(f"--config.{key}: no such config field" + (
          f"; did you mean {', '.join(close)}?" if close else
          f"; {section} holds {', '.join(siblings)}" if siblings else "; `--help` lists every field"))
    default = fields[key]
    if not eq and not isinstance(default, bool):
      raise Error(f"--config.{key} needs a value (--config.{key}=...)")
    if isinstance(default, bool) or not eq:
      if eq and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise Error(f"--config.{key}={value}: expected true or false")
    elif isinstance(default, (int, float)):
      try:
        (int if isinstance(default, int) else float)(value)
      except ValueError:
        raise Error(f"--config.{key}={value}: expected {type(default).__name__} (default {default!r})") from None


def check_backbone(backbone):
  """An unknown model.backbone, before data generation and the leakage scan (imports the model registry: jax and
  flax, which the run imports next anyway)."""
  from jfacediag import models  # pylint: disable=g-import-not-at-top  (heavy: only once the help path is passed)
  if backbone and backbone not in models.names() + ["ensemble"]:
    close = difflib.get_close_matches(backbone, models.names(), n=3, cutoff=0.5)
    raise Error(f"--config.model.backbone={backbone!r} is not a registered backbone"
                + (f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(models.names())}"))


def underscores(argv, names):
  """absl flags: --inner-val -> --inner_val for the named flags (values and --config.* untouched)."""
  out = []
  for a in argv:
    if a.startswith("--") and not a.startswith("--config"):
      name, eq, value = a[2:].partition("=")
      alt = name.replace("-", "_")
      if alt.startswith("no_") and alt[3:] in names:
        alt = "no" + alt[3:]  # absl's negation of a boolean: --nokeep_checkpoints.
      if alt in names or (alt.startswith("no") and alt[2:] in names):
        a = f"--{alt}{eq}{value}"
    out.append(a)
  return out


def dashes(argv):
  """argparse tools: --min_prob -> --min-prob (values untouched; stops at a bare --)."""
  out, rest = [], False
  for a in argv:
    if a == "--":
      rest = True
    if not rest and a.startswith("--") and "_" in a.partition("=")[0]:
      name, eq, value = a[2:].partition("=")
      a = f"--{name.replace('_', '-')}{eq}{value}"
    out.append(a)
  return out


# A user's mistake or the machine's refusal: a bad value or name (ValueError, models.UnknownName, an unreadable or
# unsafe checkpoint), a missing or unwritable file (OSError), a missing package, a workdir another process holds.
# Anything else (a KeyError, a TypeError) is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, workdir_lock.Locked)


def one_line_errors(fn, *args):
  """Runs fn(*args) for every entry point: a user's mistake (USER_ERRORS) is one line on stderr and exit status 2,
  not a traceback. Returns the exit status."""
  try:
    fn(*args)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and stops by itself): one line.
    print("\ninterrupted (Ctrl-C); rerun the same command to resume from the last saved state", file=sys.stderr)
    return 130
  return 0


class ArgumentParser(argparse.ArgumentParser):
  """argparse for every argparse entry point: a mistake is one line, as train's are (no usage block), and an unknown
  flag names the closest valid one; exit status 2."""

  def error(self, message):
    known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in re.findall(r"(?<!\w)(--?[\w-]+)", message.partition("unrecognized arguments:")[2]):
      close = difflib.get_close_matches(word.split("=")[0].replace("_", "-"), known, n=1, cutoff=0.6)
      if close:
        hints.append(f"did you mean {close[0]} for {word}?")
    self.exit(2, f"error: {message}" + (f"; {' '.join(hints)}" if hints else "")
              + f" ({self.prog} --help lists the flags)\n")


def flag_names(prog):
  return {name.split()[0].lstrip("-").split("=")[0].split(".")[0].replace("-", "_") for name, _ in FLAGS[prog]}


def check_command(prog, argv, backbone=True):
  """Raises Error for the first mistake in an absl program's arguments (after `underscores`); returns the config."""
  known = flag_names(prog)
  for a in argv:
    if a.startswith("--") and not a.startswith("--config"):
      name = a[2:].partition("=")[0]
      if name not in known and not (name.startswith("no") and name[2:] in known):
        close = difflib.get_close_matches(name, known, n=2)
        raise Error(f"unknown flag --{name}" + (f"; did you mean --{close[0].replace('_', '-')}?" if close else
                                                 f"; python -m jfacediag.{prog} --help lists them"))
  spec, _ = _config_arg(argv)
  if spec is None:
    raise Error("--config FILE is required (e.g. --config configs/toy.py); --help lists the flags and fields")
  config = load_config(spec)
  check_overrides(config, argv)
  def value(key, default):  # The command line's last override, else the config file's value.
    return next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith(f"--config.{key}=")), default)
  workdir = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--workdir"),
                 next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), ""))
  if "://" in workdir and value("data.generate", config.data.generate) and not value("data.dir", config.data.dir):
    raise Error(f"--workdir {workdir} is remote, but the config generates its data into the workdir "
                f"(data.generate={value('data.generate', config.data.generate)!r}): pass --config.data.dir=DIR, a "
                "folder every worker has, or use a local --workdir")
  if backbone:
    check_backbone(value("model.backbone", config.model.backbone))
  return config


def preflight(prog, doc, flag_names=()):
  """Runs before the heavy imports of an absl entry point: --help (exit 0), argument mistakes (exit 2). Rewrites
  sys.argv's dashed flag spellings for absl."""
  argv = underscores(sys.argv[1:], set(flag_names))
  if any(a in HELP_FLAGS for a in argv):
    print(help_text(prog, doc))
    sys.exit(0)
  try:
    check_command(prog, argv)
  except Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  sys.argv[1:] = argv
