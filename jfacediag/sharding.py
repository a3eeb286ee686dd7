"""The device mesh: one `data` axis over every device of every process; parameters replicated, batches split."""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(mode):
  """mode "yes" always, "auto" when launch.sh (or the user) set JAX_COORDINATOR_ADDRESS, "no" never.

  The coordinator comes from JAX_COORDINATOR_ADDRESS or the cluster (Cloud TPU, SLURM, Open MPI: JAX detects
  them); the process count and id from JAX_NUM_PROCESSES / JAX_PROCESS_ID when set (launch.sh local and gpu set
  them; JAX itself does not read them). Processes on CPU exchange data through gloo collectives.
  """
  if mode not in ("auto", "yes", "no"):
    raise ValueError(f"config.distributed={mode!r}; expected 'auto', 'yes' or 'no'")
  if jax.distributed.is_initialized():
    return
  if mode == "yes" or (mode == "auto" and os.environ.get("JAX_COORDINATOR_ADDRESS")):
    kw = {}
    if os.environ.get("JAX_NUM_PROCESSES"):
      kw = {"num_processes": int(os.environ["JAX_NUM_PROCESSES"]), "process_id": int(os.environ["JAX_PROCESS_ID"])}
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Only the CPU backend reads it.
    jax.distributed.initialize(**kw)


def make_mesh():
  # jax.sharding.Mesh keeps Auto axis types (jax.make_mesh defaults to Explicit since 0.9): plain data parallelism.
  return Mesh(np.array(jax.devices()), ("data",))


def platform(mesh):
  """The platform of the mesh's devices ("cpu", "gpu", "tpu"): what its steps are compiled for."""
  return mesh.devices.flat[0].platform


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
