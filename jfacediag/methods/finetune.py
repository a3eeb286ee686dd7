"""DTL1: the backbone and a new head trained together (orbax checkpoints, exact resume; SIGTERM and Ctrl-C save and
stop at the end of the step); the reported model is the last or the best-on-validation checkpoint
(train.report_checkpoint)."""
import math
import signal
import sys
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from jfacediag import calibration, checkpointing, metric_writer, network, optim, progress, sharding, steps
from jfacediag.data import pipeline
from jfacediag.methods import base

NAME = "finetune"
LABEL = "DTL1 (fine-tuning)"
SHORT = "DTL1 (fine-tune)"
SCORES = "softmax"
CALIBRATION = "temperature"
NETWORK = True


def run(config, workdir, ds):
  net = network.build(config, ds.classes, ds.root)
  mesh = sharding.make_mesh()
  scores = base.predictor(config, ds, net, mesh)
  trained = train(config, workdir, ds, net, mesh, scores)
  if trained is None:
    return None
  variables, step, which = trained
  heldout = None  # The validation logits of the reported model: calibration's held-out data.
  if ds.val[0]:
    heldout = (scores(variables, ds.val), ds.val[1])
  return base.network_outcome(ds, net, variables, step, which, heldout, scores)


def train(config, workdir, ds, net, mesh, scores):
  """Returns (variables to report, their step, "last" or "best"), or None when stopped early."""
  (tr_files, tr_labels), (va_files, va_labels) = ds.train, ds.val
  model, variables, pp, cfg = net.model, net.variables, net.pp, config.train
  num_classes, batch = model.num_classes, config.input.batch_size
  sharding.check_batch_size(batch, mesh)
  steps_per_epoch = len(tr_files) / batch
  total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
  lr = optim.schedule(config.optim, steps_per_epoch, total)
  tx = optim.make(config.optim, variables["params"], lr)
  state = jax.device_put(steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
      opt_state=tx.init(variables["params"]), rng=jax.random.key_data(jax.random.PRNGKey(config.seed + 1))),
      sharding.replicated(mesh))

  has_val = len(va_files) > 0
  if not has_val and cfg.report_checkpoint == "best":
    raise ValueError("train.report_checkpoint='best' needs a validation split (data.val_fraction > 0 or val/)")
  mode = "min" if cfg.best_metric.endswith("loss") else "max"
  ckpts = checkpointing.Checkpoints(workdir, cfg.best_metric if has_val else "", mode)
  # Initialisation order: a checkpoint in the workdir (resume) > init.checkpoint (already merged) > random.
  ckpts.check_method(NAME)
  start = ckpts.latest_step() or 0
  if start:
    state, meta = ckpts.restore(start, state)
    extending = "train.epochs" in config.resume_allow  # config_check let the change through.
    if meta["total_steps"] != total and not (extending and total >= start):
      raise ValueError(f"The checkpoint was written by a run of {meta['total_steps']} steps; this config gives "
                       f"{total} (train.epochs, input.batch_size or the split changed). Use a new --workdir"
                       + (f", or train.epochs for at least {start} steps." if extending else "."))
    if meta["total_steps"] != total:
      progress.log(f"Extending the run from {meta['total_steps']} to {total} steps (config.resume_allow="
                   f"train.epochs): the learning-rate schedule now spans {total} steps.")
    progress.log(f"Resuming from step {start}/{total} (epoch {start / steps_per_epoch:.2f}).")

  dtype = steps.compute_dtype(config.dtype)
  train_step = steps.make_train_step(model, tx, mesh, num_classes, config.optim.label_smoothing,
                                     not config.model.freeze_bn_stats, lr, dtype)
  writer = metric_writer.MetricWriter(workdir, resume_step=start)
  eval_every = max(1, round(cfg.eval_every_epochs * steps_per_epoch))

  # SIGTERM (preemption) and SIGINT (Ctrl-C) finish the step, save a checkpoint and stop; a second Ctrl-C
  # interrupts at once (the work since the last checkpoint is then lost).
  stop = {"signal": None}

  def on_signal(signum, _):
    if stop["signal"] == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    stop["signal"] = signum
    if signum == signal.SIGINT and jax.process_index() == 0:
      print("\nInterrupted: saving a checkpoint after this step (Ctrl-C again to stop at once).", file=sys.stderr,
            flush=True)
  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  batches = pipeline.train_batches(ds.root, tr_files, tr_labels, pp, config.input, batch, config.seed, start,
                                   total - start)
  bar = progress.bar(total=total, initial=start, desc="train", unit="step", disable=jax.process_index() != 0,
                     every_fraction=0.1)
  last_log, last_t = start, time.perf_counter()
  stopped = False
  for step in range(start, total):
    state, train_metrics = train_step(state, sharding.global_batch(next(batches), mesh))
    done = step + 1
    if done % cfg.log_every_steps == 0 or done == total:
      m = jax.device_get(train_metrics)
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"Non-finite loss {m['loss']} at step {done}; lower optim.lr or check the data")
      now = time.perf_counter()
      ips = (done - last_log) * batch / (now - last_t)
      last_log, last_t = done, now
      writer.write(done, epoch=done / steps_per_epoch, train_loss=m["loss"], train_accuracy=m["accuracy"],
                   lr=m["lr"], images_per_second=ips)
      bar.set_postfix(epoch=f"{done / steps_per_epoch:.1f}", loss=f"{m['loss']:.4f}", img_s=f"{ips:.1f}")
    bar.update(1)

    val = None
    if has_val and (done % eval_every == 0 or done == total):
      logits = scores({"params": state.params, "batch_stats": state.batch_stats}, ds.val)
      val = {"val_loss": calibration.log_loss(logits, va_labels),
             "val_accuracy": float(np.mean(logits.argmax(1) == va_labels))}
      writer.write(done, epoch=done / steps_per_epoch, **val)
      last_t = time.perf_counter()  # Keep validation time out of the next images/s figure.
    preempted = stop["signal"] is not None
    if jax.process_count() > 1:  # Every process must agree to save at the same step.
      preempted = bool(multihost_utils.process_allgather(np.int32(preempted)).any())
    stopped = preempted or (cfg.stop_after_steps and done >= cfg.stop_after_steps and done < total)
    if val or stopped or done % cfg.checkpoint_every_steps == 0 or done == total:
      ckpts.save(done, state, {"method": NAME, "total_steps": total, "epoch": done / steps_per_epoch,
                               "input_position": done * batch}, metrics=val)
    if stopped:
      break
  bar.close()
  writer.close()
  ckpts.wait()
  for s, handler in previous.items():
    signal.signal(s, handler)
  if stopped:
    if stop["signal"] == signal.SIGINT:
      progress.log(f"Interrupted at step {done}/{total}; checkpoint saved. Rerun the same command to resume.")
    else:
      why = "SIGTERM" if stop["signal"] else f"train.stop_after_steps={cfg.stop_after_steps}"
      progress.log(f"Stopped at step {done}/{total} ({why}); checkpoint saved. Rerun the same command to resume.")
    ckpts.close()
    if stop["signal"] is not None:
      sys.exit(128 + stop["signal"])  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them.
    return None

  report_step, which = total, "last"
  if cfg.report_checkpoint == "best":
    report_step, which = ckpts.best_step() or total, "best"
    if report_step != total:
      state, _ = ckpts.restore(report_step, state)
  ckpts.close()
  return {"params": state.params, "batch_stats": state.batch_stats}, report_step, which
