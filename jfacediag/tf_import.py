"""Imports TensorFlow for the input pipeline only: quiet, and never on a GPU (JAX owns the accelerators)."""
import functools


@functools.cache
def tf():
  import tensorflow as tf_module  # pylint: disable=g-import-not-at-top
  tf_module.config.set_visible_devices([], "GPU")
  return tf_module
