"""Converted backbone weights on disk, and the checked merge of them into a freshly initialised model.

A weights directory (what `tools/convert_weights.py` writes, what `config.init.checkpoint` names):
  metadata.json   {"arch", "preprocessing", "feature_dim", "feature_layer", "source", "sha256", ...}
  variables/      orbax checkpoint of {"params", "batch_stats"} of the backbone alone, plus "upstream_head"
                  ({"kernel", "bias"}: the published classifier on the features, e.g. VGG-Face's fc8) when the
                  source had one. Training loads params and batch_stats; the upstream head serves verification.
"""
import json
import os
import re

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from jfacediag.models.preprocessing import Preprocessing

METADATA = "metadata.json"
VARIABLES = "variables"


def save(directory, variables, metadata):
  """Writes a weights directory. `variables` = {"params", "batch_stats"[, "upstream_head"]} of a backbone."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  for key in ("arch", "preprocessing"):
    if key not in metadata:
      raise ValueError(f"weights metadata needs {key!r}; got keys {sorted(metadata)}")
  unknown = set(variables) - {"params", "batch_stats", "upstream_head"}
  if unknown:
    raise ValueError(f"weights variables hold unknown collections {sorted(unknown)}")
  variables = {"batch_stats": {}, **variables}
  variables = jax.tree.map(np.asarray, flax.core.unfreeze(variables))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, VARIABLES), variables, force=True)
  with open(os.path.join(directory, METADATA), "w", encoding="utf-8") as f:
    json.dump(metadata, f, indent=2)


def load(directory):
  """Returns (variables as numpy, metadata, preprocessing) of a weights directory."""
  directory = os.path.abspath(directory)
  meta_path = os.path.join(directory, METADATA)
  if not os.path.exists(meta_path) or not os.path.isdir(os.path.join(directory, VARIABLES)):
    raise FileNotFoundError(f"init.checkpoint={directory!r} is not a weights directory (needs {METADATA} and "
                            f"{VARIABLES}/; tools/convert_weights.py writes one)")
  with open(meta_path, encoding="utf-8") as f:
    metadata = json.load(f)
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(os.path.join(directory, VARIABLES))
  variables = jax.tree.map(np.asarray, variables)
  variables.setdefault("batch_stats", {})
  return variables, metadata, Preprocessing.from_dict(metadata["preprocessing"])


def _flat(tree):
  return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def merge(init, loaded, dont_load="", what="backbone"):
  """Returns `init` with every leaf replaced by `loaded`'s, after checking both name the same leaves and shapes.

  Leaves whose path matches the `dont_load` regex keep their fresh value and may be missing from `loaded`.
  Anything else missing, extra or mis-shaped is an error with a -/+ diff.
  """
  skip = re.compile(dont_load) if dont_load else None
  want, have = _flat(init), _flat(loaded)
  keep = {k for k in want if skip and skip.search(k)}
  missing = sorted(set(want) - set(have) - keep)
  extra = sorted(set(have) - set(want))
  shapes = sorted(k for k in set(want) & set(have) - keep if np.shape(want[k]) != np.shape(have[k]))
  if missing or extra or shapes:
    lines = [f"- {k} {np.shape(want[k])} (model, not in weights)" for k in missing]
    lines += [f"+ {k} {np.shape(have[k])} (weights, not in model)" for k in extra]
    lines += [f"! {k}: model {np.shape(want[k])} vs weights {np.shape(have[k])}" for k in shapes]
    raise ValueError(f"The {what} weights do not fit the model ({len(missing)} missing, {len(extra)} unused, "
                     f"{len(shapes)} mis-shaped; init.dont_load={dont_load!r}):\n" + "\n".join(lines))
  merged = {k: (want[k] if k in keep else np.asarray(have[k], dtype=np.asarray(want[k]).dtype)) for k in want}
  return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in merged.items()})
