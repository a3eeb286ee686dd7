"""The train state and the jit-compiled steps: train, predict (logits) and features.

Steps are jitted over the mesh: parameters replicated, batches split on the data axis. BatchNorm reduces over the
batch axis of a global array, so its statistics are global (sync-BN) without any axis name.

Mixed precision (`dtype="bfloat16"`, config.dtype): parameters, optimiser state and BatchNorm statistics stay
float32; each step casts them and the images to bfloat16 for the forward and backward pass, and casts the logits
back to float32 for the loss (gradients arrive in float32 through the cast). Flax's BatchNorm reduces its batch
statistics in float32 either way.
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jfacediag import cpu, sharding
from jfacediag.data import pipeline


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  rng: jax.Array  # Raw uint32 key data: per-step keys are fold_in(rng, step), so resuming replays them exactly.


def init_variables(model, seed, input_size):
  """Initial {"params", "batch_stats"} of `model` for square RGB inputs of side `input_size`.

  Uses the "rbg" PRNG: on XLA:CPU, compiling threefry for every initializer costs ~10 s even for a tiny net
  (rbg: ~2 s); the values are deterministic for a given seed and platform.
  """
  x = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
  key = jax.random.key(seed, impl="rbg")
  variables = jax.jit(functools.partial(model.init, train=False))({"params": key}, x)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name):
  if name not in DTYPES:
    raise ValueError(f"dtype={name!r}; expected one of {sorted(DTYPES)}")
  return DTYPES[name]


def _cast(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def apply_in(model, dtype, variables, x, **kw):
  """model.apply with variables and input cast to `dtype`; float outputs (and BN updates) come back float32."""
  if dtype == jnp.float32:
    return model.apply(variables, x, **kw)
  return _cast(model.apply(_cast(variables, dtype), x.astype(dtype), **kw), jnp.float32)


def make_train_step(model, tx, mesh, num_classes, label_smoothing, bn_train, lr_schedule, dtype=jnp.float32):
  """Returns train_step(state, batch) -> (state, metrics); the state's buffers are donated."""

  def step_fn(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
      logits, updates = apply_in(model, dtype, {"params": params, "batch_stats": state.batch_stats},
                                 batch["image"], train=True, bn_train=bn_train, rngs={"dropout": rng},
                                 mutable=["batch_stats"])
      targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), label_smoothing)
      loss = optax.softmax_cross_entropy(logits, targets).mean()
      return loss, (logits, updates.get("batch_stats", state.batch_stats))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "lr": lr_schedule(state.step)}
    new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new, metrics

  rep = sharding.replicated(mesh)
  return cpu.jit(step_fn, sharding.platform(mesh), donate_argnums=(0,), out_shardings=(rep, rep))


def make_predict_step(model, mesh, dtype=jnp.float32):
  """Returns predict(variables, images, index) -> (logits, index), replicated so every process reads all rows."""
  rep = sharding.replicated(mesh)
  return cpu.jit(lambda v, x, i: (apply_in(model, dtype, v, x, train=False), i), sharding.platform(mesh),
                 out_shardings=rep)


def make_feature_step(model, mesh, dtype=jnp.float32):
  """Returns features(variables, images, index) -> (feature layer, index), replicated (DTL2)."""
  rep = sharding.replicated(mesh)
  return cpu.jit(lambda v, x, i: (apply_in(model, dtype, v, x, train=False, method="features"), i),
                 sharding.platform(mesh), out_shardings=rep)


def run_batches(fn, variables, root, files, labels, pp, batch_size, mesh, dim):
  """Runs fn(variables, images, index) over padded eval batches; returns [len(files), dim] in file order."""
  out = np.zeros((len(files), dim), np.float32)
  _, it = pipeline.eval_batches(root, files, labels, pp, batch_size)
  for local in it:
    batch = sharding.global_batch({"image": local["image"], "index": local["index"]}, mesh)
    values, index = jax.device_get(fn(variables, batch["image"], batch["index"]))
    keep = index >= 0
    out[index[keep]] = values[keep]
  return out
