"""Checkpoints under WORKDIR/checkpoints: orbax CheckpointManager behind one small class.

Each checkpoint holds the train state (params, batch_stats, optimiser state, step, RNG) and a JSON `meta` entry
(method, total steps, epoch, input position). The latest checkpoint and the best one by a validation metric are kept.
Saves are asynchronous; every process calls save and restore (orbax coordinates multi-host writes).
"""
import os

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jfacediag import fileio


class Checkpoints:

  def __init__(self, workdir, best_metric="", best_mode="max"):
    self.best_metric, self.sign = best_metric, (1.0 if best_mode == "max" else -1.0)
    keep = [policies.LatestN(1)]
    if best_metric:
      keep.append(policies.BestN(get_metric_fn=self._score, n=1, keep_checkpoints_without_metrics=False))
    self.mngr = ocp.CheckpointManager(
        fileio.absolute(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(preservation_policy=policies.AnyPreservationPolicy(keep),
                                             enable_async_checkpointing=True))

  def _score(self, metrics):
    return self.sign * float(metrics[self.best_metric])

  def latest_step(self):
    return self.mngr.latest_step()

  def best_step(self):
    """The kept step with the best metric, or None when no checkpoint carries one."""
    scored = [(self._score(m), s) for s in self.mngr.all_steps() if (m := self.mngr.metrics(s))
              and self.best_metric in m]
    return max(scored)[1] if scored else None

  def save(self, step, state, meta, metrics=None):
    if step in self.mngr.all_steps():
      return
    self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                   metrics=metrics, force=True)

  def restore(self, step, like):
    """Restores step into the structure, dtypes and shardings of `like` (a state of the same run)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    out = self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                           meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def restore_tree(self, step, sharding=None):
    """The saved train state as nested dicts, placed with `sharding` (default: this process's first device),
    whatever devices and processes wrote it; the structure comes from the checkpoint's own metadata."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that the item folder holds no step metadata: it need not.
    try:
      tree = ocp.StandardCheckpointer().metadata(os.path.join(str(self.mngr.directory), str(step), "state"))
    finally:
      logging.set_verbosity(verbosity)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree.item_metadata)
    return self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state

  def meta(self, step):
    """The JSON meta entry of a step, without restoring the state."""
    return self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def check_method(self, method):
    """Raises when the workdir's checkpoints were written by another method (finetune vs svm)."""
    step = self.latest_step()
    if step is not None and self.meta(step).get("method") != method:
      raise ValueError(f"{self.mngr.directory} holds checkpoints of a {self.meta(step).get('method')!r} run; "
                       f"this config asks method={method!r}. Use a new --workdir.")

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()
