"""Optimiser and learning-rate schedule for fine-tuning (DTL1), from config.optim."""
import re

import flax
import optax


def schedule(cfg, steps_per_epoch, total_steps):
  """Linear warmup over cfg.warmup_epochs, then constant or cosine decay to 0 at total_steps."""
  warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(cfg.lr, max(1, total_steps - warmup))
  else:
    raise ValueError(f"optim.schedule={cfg.schedule!r}; expected 'constant' or 'cosine'")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def trainable_labels(params, freeze):
  """'train' or 'freeze' per parameter leaf, by the regex `freeze` on its "/"-joined path."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  if not freeze:
    return flax.traverse_util.unflatten_dict({k: "train" for k in flat}, sep="/")
  rx = re.compile(freeze)
  labels = {k: "freeze" if rx.search(k) else "train" for k in flat}
  frozen = [k for k, v in labels.items() if v == "freeze"]
  if not frozen:
    raise ValueError(f"optim.freeze={freeze!r} matches no parameter; paths look like: {sorted(flat)[:5]}")
  if len(frozen) == len(flat):
    raise ValueError(f"optim.freeze={freeze!r} freezes every parameter; nothing would train")
  return flax.traverse_util.unflatten_dict(labels, sep="/")


def make(cfg, params, lr_schedule):
  if cfg.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(lr_schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adamw":
    tx = optax.adamw(lr_schedule, weight_decay=cfg.weight_decay)
  else:
    raise ValueError(f"optim.name={cfg.name!r}; expected 'sgd' or 'adamw'")
  if cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                               trainable_labels(params, cfg.freeze))
