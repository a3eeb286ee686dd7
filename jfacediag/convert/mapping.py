"""state_dict (numpy) -> Flax variables for one architecture, with strict accounting.

Every Flax leaf must be filled from exactly one source tensor of the right shape, and every source tensor must be
used (`num_batches_tracked` counts as used with its BatchNorm); otherwise one error lists the missing, unused and
mis-shaped keys together.
"""
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np

_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
         ("params", "weight"): "weight", ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


class ConversionError(ValueError):
  pass


def _tensor(arch, flax_path, leaf, t):
  if leaf != "kernel":
    return t
  if t.ndim == 4:  # Conv OIHW -> HWIO.
    return t.transpose(2, 3, 1, 0)
  if t.ndim == 2:
    # Rows of an NCHW flatten -> rows of an NHWC flatten (README: Converting face-recognition weights).
    if flax_path in arch.nchw:
      c, h, w = arch.nchw[flax_path]
      o = t.shape[0]
      if t.shape[1] != c * h * w:
        return t.T  # Mis-shaped; reported by the caller.
      return t.reshape(o, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, o)
    return t.T
  return t


def abstract_variables(arch):
  s = arch.preprocessing.input_size
  return jax.eval_shape(arch.make().init, jax.random.key(0, impl="rbg"), jnp.zeros((1, s, s, 3)))


def convert(arch, state_dict):
  """Returns (variables {"params", "batch_stats"[, "upstream_head"]}, report dict)."""
  src = {}
  for k, v in state_dict.items():
    for rx, rep in arch.src_rename:
      k = re.sub(rx, rep, k)
    src[k] = v
  shapes = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract_variables(arch)))
  used, missing, misshaped, out = set(), [], [], {}
  for path, sds in shapes.items():
    collection, *mod, leaf = path
    flax_path = "/".join(mod)
    key = f"{arch.torch_name(flax_path)}.{_LEAF[(collection, leaf)]}"
    if key not in src:
      missing.append(f"{key} {tuple(sds.shape)} (for {collection}/{flax_path}/{leaf})")
      continue
    t = _tensor(arch, flax_path, leaf, np.asarray(src[key]))
    used.add(key)
    if t.shape != sds.shape:
      misshaped.append(f"{key}: file {tuple(src[key].shape)} -> {t.shape}, model needs {tuple(sds.shape)}")
      continue
    out[path] = t.astype(np.float32)
  head = None
  if arch.head and f"{arch.head}.weight" in src:
    w, b = np.asarray(src[f"{arch.head}.weight"]), np.asarray(src.get(f"{arch.head}.bias", 0.0))
    used |= {f"{arch.head}.weight", f"{arch.head}.bias"} & set(src)
    if w.ndim != 2 or w.shape[1] != arch.feature_dim:
      misshaped.append(f"{arch.head}.weight: file {w.shape}, the upstream classifier must read the "
                       f"{arch.feature_dim}-d features")
    else:
      head = {"kernel": w.T.astype(np.float32), "bias": np.broadcast_to(b, w.shape[:1]).astype(np.float32)}
  for k in src:
    if k.endswith(".num_batches_tracked") and k[: -len("num_batches_tracked")] + "running_mean" in used:
      used.add(k)
  unused = sorted(set(src) - used)
  if missing or unused or misshaped:
    raise ConversionError(
        f"The checkpoint does not fit --arch {arch.name} ({len(missing)} missing, {len(unused)} unused, "
        f"{len(misshaped)} mis-shaped):\n" + "".join(f"- {m}\n" for m in missing)
        + "".join(f"+ {u} {tuple(np.shape(src[u]))} (in the file, not used)\n" for u in unused)
        + "".join(f"! {m}\n" for m in misshaped))
  variables = flax.traverse_util.unflatten_dict(out)
  variables.setdefault("batch_stats", {})
  if head is not None:
    variables["upstream_head"] = head
  n = sum(v.size for v in out.values()) + (head["kernel"].size + head["bias"].size if head else 0)
  return variables, {"tensors": len(used), "parameters": int(n),
                     "upstream_classes": int(head["kernel"].shape[1]) if head else 0}
