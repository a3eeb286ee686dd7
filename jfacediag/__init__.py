"""jfacediag: facial diagnosis by deep transfer learning from face recognition (JAX/Flax)."""
import os

# TensorFlow is only our input pipeline. Silence its import banner (oneDNN, absl) before anything imports it;
# a user who sets these variables keeps their own values.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before JAX starts its CPU client: malloc keeps the pages XLA:CPU frees after each step (jfacediag/cpu.py).
from jfacediag import cpu  # pylint: disable=g-import-not-at-top

cpu.keep_freed_memory()

__version__ = "0.1.0"
