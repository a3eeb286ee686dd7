"""jfacediag: facial diagnosis by deep transfer learning from face recognition (JAX/Flax)."""
import os
import sys

# TensorFlow is only our input pipeline. Silence its import banner (oneDNN, absl) before anything imports it;
# a user who sets these variables keeps their own values.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before anything else: a `python -m jfacediag.*` command on CPU restarts itself with huge pages for malloc, so that
# XLA:CPU's steps do not page-fault their memory in again each step (jfacediag/cpu.py).
from jfacediag import cpu  # pylint: disable=g-import-not-at-top

cpu.reexec_with_huge_pages()

# libtpu (the `tpu` extra: TPU pre-flight compiles, jfacediag.aot) makes JAX probe for a TPU at every start and
# print a page of warnings on a host that has none. Where no GPU or TPU is visible, JAX runs on CPU anyway.
if not os.environ.get("JAX_PLATFORMS") and not cpu.accelerator_visible():
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # A script imported jax first, and jax read the variable then: tell its config too.
    try:
      sys.modules["jax"].config.update("jax_platforms", "cpu")
    except Exception:  # pylint: disable=broad-except  (its backends already started: nothing left to change)
      pass

__version__ = "0.1.0"
