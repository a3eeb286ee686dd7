"""The config checked once, before any work: impossible values are refused with the field and its allowed range, and
a resumed workdir refuses settings that would change its result.

`validate(config)` runs at the start of every run (train, each cv fold); it also splits a list field given on the
command line as one comma-separated string (--config.data.classes=a,b) into its items. `check_resume(config, workdir)`
keeps WORKDIR/run_config.json, the config the workdir's first trained state was made with, and compares a resumed run
against it: every difference that changes the result stops the run, naming the fields (old -> new), unless listed in
`config.resume_allow` (e.g. "train.epochs" to extend a run, accepting that it no longer equals an uninterrupted run of
the new length). Fields that never change the trained model or its scores (HARMLESS) may always differ.
"""
import json
import os

import ml_collections

from jfacediag import fileio

RUN_CONFIG = "run_config.json"
METHODS = ("finetune", "svm", "dsift")  # jfacediag/methods/
HARMLESS = {"input.prefetch", "input.eval_batch_size", "train.log_every_steps", "train.checkpoint_every_steps",
            "train.stop_after_steps", "leakage.cache", "leakage.top_pairs", "distributed", "resume_allow",
            "eval.bootstrap", "eval.metadata", "eval.paper_row", "compare"}
LISTS = ("compare", "data.classes", "svm.C_grid", "resume_allow")  # Tuple fields.

# (field, test, allowed): checked in validate(); `test` takes the value.
_RULES = (
    ("input.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("input.eval_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("input.prefetch", lambda v: v >= 0, "an integer >= 0"),
    ("input.rrc_min_area", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("input.color_jitter", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.epochs", lambda v: v > 0, "> 0 (a run that trains nothing would report an untrained model)"),
    ("train.log_every_steps", lambda v: v >= 1, "an integer >= 1"),
    ("train.eval_every_epochs", lambda v: v > 0, "> 0"),
    ("train.checkpoint_every_steps", lambda v: v >= 1, "an integer >= 1"),
    ("train.stop_after_steps", lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    ("train.best_metric", lambda v: v in ("val_accuracy", "val_loss"), "'val_accuracy' or 'val_loss'"),
    ("train.report_checkpoint", lambda v: v in ("last", "best"), "'last' or 'best'"),
    ("optim.name", lambda v: v in ("sgd", "adamw"), "'sgd' or 'adamw'"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.schedule", lambda v: v in ("constant", "cosine"), "'constant' or 'cosine'"),
    ("optim.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("optim.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.grad_clip", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("model.input_size", lambda v: v == 0 or v >= 16, "0 (the backbone's own) or >= 16 pixels"),
    ("model.head_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.ensemble_combine", lambda v: v in ("concat", "mean"), "'concat' or 'mean'"),
    ("data.train_per_class", lambda v: v >= 1, "an integer >= 1"),
    ("data.test_per_class", lambda v: v >= 1, "an integer >= 1"),
    ("data.test_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.num_folds", lambda v: v >= 2, "an integer >= 2"),
    ("data.fold", lambda v: v >= 0, "an integer >= 0"),
    ("data.group_by", lambda v: v in ("", "duplicates", "identity"), "'', 'duplicates' or 'identity'"),
    ("data.align", lambda v: v in ("", "auto"), "'' or 'auto'"),
    ("data.max_megapixels", lambda v: v > 0, "> 0"),
    ("svm.C", lambda v: v > 0, "> 0"),
    ("svm.cv_folds", lambda v: v >= 2, "an integer >= 2"),
    ("svm.max_iter", lambda v: v >= 1, "an integer >= 1"),
    ("dsift.step", lambda v: v >= 1, "an integer >= 1"),
    ("dsift.patch", lambda v: v >= 4, "an integer >= 4"),
    ("dsift.vocabulary", lambda v: v >= 2, "an integer >= 2"),
    ("eval.bootstrap", lambda v: v >= 0, "an integer >= 0 (0 = no intervals)"),
    ("leakage.false_match_rate", lambda v: 0 < v < 0.5, "in (0, 0.5)"),
    ("leakage.identity", lambda v: v in ("per_class", "pooled", "off"), "'per_class', 'pooled' or 'off'"),
    ("leakage.threshold", lambda v: -1 <= v <= 1, "a cosine in [-1, 1] (0 = calibrate)"),
    ("leakage.same_photo_min_cosine", lambda v: -1 <= v <= 1, "a cosine in [-1, 1]"),
    ("leakage.same_photo_inliers", lambda v: v >= 3, "an integer >= 3"),
    ("dtype", lambda v: v in ("float32", "bfloat16"), "'float32' or 'bfloat16'"),
    ("distributed", lambda v: v in ("auto", "yes", "no"), "'auto', 'yes' or 'no'"),
)


def _get(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def _number(text):
  """A C_grid item as a float; a string that is not a number stays a string, for validate to name."""
  try:
    return float(text)
  except ValueError:
    return text


def _split_commas(config):
  for path in LISTS:
    value = _get(config, path)
    if isinstance(value, tuple) and any(isinstance(v, str) and "," in v for v in value):
      parent, _, key = path.rpartition(".")
      node = _get(config, parent) if parent else config
      items = tuple(p.strip() for v in value for p in (v.split(",") if isinstance(v, str) else [v]) if str(p).strip())
      node[key] = tuple(_number(p) for p in items) if path == "svm.C_grid" else items


def validate(config):
  """Raises ValueError listing every impossible field value (field = value; allowed)."""
  _split_commas(config)
  bad = []
  for path, ok, allowed in _RULES:
    value = _get(config, path)
    if value is None:
      continue
    try:
      good = ok(value)
    except TypeError:
      good = False
    if not good:
      bad.append(f"  {path} = {value!r}: must be {allowed}")
  compare = _get(config, "compare") or ()
  if compare and config.method:
    bad.append(f"  method = {config.method!r} with compare = {tuple(compare)}: a comparison runs each method of "
               "compare and takes no method; for one method set the config's own argument (configs/demo.py:"
               f"method={config.method}) or --config.compare='()'")
  elif not compare and config.method not in METHODS:
    hint = (f"; several methods side by side are compare = {tuple(m.strip() for m in config.method.split(','))}"
            if "," in config.method else "")
    bad.append(f"  method = {config.method!r}: must be one of {', '.join(METHODS)}{hint}")
  for m in compare:
    if m not in METHODS:
      bad.append(f"  compare = {tuple(config.compare)}: {m!r} is not one of {', '.join(METHODS)}")
  grid = _get(config, "svm.C_grid")
  if grid is not None and not (grid and all(isinstance(c, (int, float)) and c > 0 for c in grid)):
    bad.append(f"  svm.C_grid = {config.svm.C_grid!r}: must be a non-empty tuple of numbers > 0")
  weights = [w for w in str(_get(config, "init.checkpoint") or "").split(",") if w.strip()]
  if _get(config, "model.backbone") == "ensemble" and len(weights) < 2:
    bad.append(f"  init.checkpoint = {config.init.checkpoint!r}: model.backbone = 'ensemble' needs 2 or more "
               "comma-separated weights (its members)")
  elif _get(config, "model.backbone") != "ensemble" and len(weights) > 1:
    bad.append(f"  init.checkpoint = {config.init.checkpoint!r}: several weights need model.backbone = 'ensemble'")
  if bad:
    raise ValueError("The config asks for something impossible:\n" + "\n".join(bad))


def from_json(tree):
  """A config from its JSON form (config.json, cv_settings.json): JSON's lists back to tuples."""
  def tuples(v):
    if isinstance(v, dict):
      return {k: tuples(x) for k, x in v.items()}
    return tuple(tuples(x) for x in v) if isinstance(v, list) else v
  return ml_collections.ConfigDict(tuples(tree))


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _legacy(flat):
  """A run_config.json from before the list fields were tuples: "a,b" strings as the lists JSON holds now."""
  for k in LISTS:
    if isinstance(flat.get(k), str):
      items = [p.strip() for p in flat[k].split(",") if p.strip()]
      flat[k] = [_number(p) for p in items] if k == "svm.C_grid" else items
  flat.setdefault("compare", [])
  return flat


def check_resume(config, workdir, trained):
  """`trained`: the workdir holds a trained state (a checkpoint, a fitted model). Returns the fields that differ
  but are allowed; raises ValueError for the others. Without a trained state, the current config is recorded."""
  path = os.path.join(workdir, RUN_CONFIG)
  now = json.loads(config.to_json_best_effort())
  if not trained or not fileio.exists(path):
    with fileio.open(path, "w") as f:
      json.dump(now, f, indent=2)
    return {}
  old, new = _legacy(_flat(json.loads(fileio.read_text(path)))), _flat(now)
  diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
  allowed = HARMLESS | set(config.get("resume_allow", ()))
  refused = {k: v for k, v in diff.items() if k not in allowed}
  if refused:
    raise ValueError(
        f"{workdir} holds a run trained with other settings; resuming would mix them:\n"
        + "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        + f"\nResume with the original values (they are in {path}), use a new --workdir, or accept the change with "
        f"--config.resume_allow={','.join(refused)} (the run then no longer equals an uninterrupted one).")
  changed = {k: v for k, v in diff.items() if k not in HARMLESS}
  if changed:
    with fileio.open(path, "w") as f:
      json.dump(now, f, indent=2)
  return changed
