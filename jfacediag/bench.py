r"""Benchmark: images/s of the fine-tune train step and of DTL2 feature extraction, on all local devices.

  python -m jfacediag.bench --model resnet50 --size 112 --batch 8
  python -m jfacediag.bench --model resnet_tiny --size 48 --batch 16     # the toy config's model

Runs the trainer's own jitted steps (steps.make_train_step / make_feature_step: SGD momentum, BatchNorm updated,
buffers donated) on random data already on the devices, so the figures exclude the input pipeline. Prints a table
and one JSON line. Compile time is reported separately; timed steps follow `--warmup` untimed ones.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jfacediag import base_config, models, optim, sharding, steps
from jfacediag.models import classifier


def _time(fn, n):
  t = time.perf_counter()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / n


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="resnet50", help=f"backbone: {', '.join(models.names())}")
  ap.add_argument("--size", type=int, default=112)
  ap.add_argument("--batch", type=int, default=8, help="global batch")
  ap.add_argument("--classes", type=int, default=5)
  ap.add_argument("--steps", type=int, default=10, help="timed steps")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  args = ap.parse_args()

  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch, mesh, "--batch")
  model = classifier.Classifier(models.get(args.model).make(), args.classes)
  variables = jax.device_put(steps.init_variables(model, 0, args.size), sharding.replicated(mesh))
  n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({"image": rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32),
                                 "label": rng.integers(0, args.classes, args.batch).astype(np.int32),
                                 "index": np.arange(args.batch)}, mesh)

  # Features first: the train step donates the state's buffers, which share memory with `variables`.
  extract = steps.make_feature_step(model, mesh)
  t = time.perf_counter()
  jax.block_until_ready(extract(variables, batch["image"], batch["index"]))
  feat_compile = time.perf_counter() - t
  _time(lambda: extract(variables, batch["image"], batch["index"]), args.warmup)
  feat_s = _time(lambda: extract(variables, batch["image"], batch["index"]), args.steps)

  cfg = base_config.get_config().optim
  lr = optax.constant_schedule(cfg.lr)
  tx = optim.make(cfg, variables["params"], lr)
  state = jax.device_put(steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
      opt_state=tx.init(variables["params"]), rng=jax.random.key_data(jax.random.PRNGKey(0))),
      sharding.replicated(mesh))
  train_step = steps.make_train_step(model, tx, mesh, args.classes, 0.0, True, lr)
  t = time.perf_counter()
  compiled = train_step.lower(state, {"image": batch["image"], "label": batch["label"]}).compile()
  train_compile = time.perf_counter() - t
  holder = {"state": state}

  def one_train_step():
    holder["state"], m = compiled(holder["state"], {"image": batch["image"], "label": batch["label"]})
    return m["loss"]

  _time(one_train_step, args.warmup)
  train_s = _time(one_train_step, args.steps)

  dev = jax.devices()[0]
  out = {"model": args.model, "size": args.size, "batch": args.batch, "params": int(n_params),
         "devices": jax.device_count(), "platform": dev.platform, "device_kind": dev.device_kind,
         "train_step_s": train_s, "train_img_per_s": args.batch / train_s, "train_compile_s": train_compile,
         "features_step_s": feat_s, "features_img_per_s": args.batch / feat_s, "features_compile_s": feat_compile}
  print(f"{args.model} {args.size}x{args.size}, global batch {args.batch}, {n_params / 1e6:.2f}M params, "
        f"{jax.device_count()} x {dev.device_kind}")
  print(f"  train step     {train_s * 1e3:9.1f} ms  {args.batch / train_s:9.1f} img/s  (compile {train_compile:.1f} s)")
  print(f"  DTL2 features  {feat_s * 1e3:9.1f} ms  {args.batch / feat_s:9.1f} img/s  (compile {feat_compile:.1f} s)")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
