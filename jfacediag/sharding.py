"""The device mesh: one `data` axis over every device of every process; parameters replicated, batches split."""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(mode):
  """mode "yes" always, "auto" when launch.sh (or the user) set JAX_COORDINATOR_ADDRESS, "no" never."""
  if mode not in ("auto", "yes", "no"):
    raise ValueError(f"config.distributed={mode!r}; expected 'auto', 'yes' or 'no'")
  if mode == "yes" or (mode == "auto" and os.environ.get("JAX_COORDINATOR_ADDRESS")):
    jax.distributed.initialize()  # Reads coordinator, process count and id from the environment / cluster.


def make_mesh():
  # jax.sharding.Mesh keeps Auto axis types (jax.make_mesh defaults to Explicit since 0.9): plain data parallelism.
  return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  return NamedSharding(mesh, P("data"))


def check_batch_size(global_batch, mesh, what="input.batch_size"):
  n, procs = mesh.size, jax.process_count()
  if global_batch % n:
    raise ValueError(f"{what}={global_batch} does not divide by device_count={n} "
                     f"(per-process {global_batch / procs:g}, per-device {global_batch / n:g})")


def global_batch(local, mesh):
  """This process's rows of a batch (dict of numpy) -> global jax arrays sharded over the data axis."""
  s = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(s, v) for k, v in local.items()}
