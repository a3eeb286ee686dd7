"""Workdir files on local disk or on any filesystem TensorFlow knows (gs://; ram:// in the tests).

Local paths use Python's own files; paths with a scheme go through tf.io.gfile, as TensorBoard's event files do,
and orbax writes its checkpoints there itself. Object stores cannot append, so `append` rewrites remote files.
"""
import builtins
import hashlib
import os

from jfacediag.tf_import import tf


def is_remote(path):
  return "://" in str(path)


def absolute(path):
  return str(path) if is_remote(path) else os.path.abspath(os.path.expanduser(str(path)))


def open(path, mode="r"):  # pylint: disable=redefined-builtin
  if is_remote(path):
    if "w" in mode and tf().io.gfile.exists(path):
      tf().io.gfile.remove(path)  # Some filesystems (ram://) would otherwise write over the old bytes in place.
    return tf().io.gfile.GFile(path, mode)
  if "b" in mode:
    return builtins.open(path, mode)
  return builtins.open(path, mode, encoding="utf-8", newline="" if "w" in mode or "a" in mode else None)


def exists(path):
  return tf().io.gfile.exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path):
  if is_remote(path):
    tf().io.gfile.makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path):
  return tf().io.gfile.listdir(path) if is_remote(path) else os.listdir(path)


def isdir(path):
  return tf().io.gfile.isdir(path) if is_remote(path) else os.path.isdir(path)


def mtime(path):
  """Modification time in seconds since the epoch."""
  return tf().io.gfile.stat(path).mtime_nsec / 1e9 if is_remote(path) else os.path.getmtime(path)


def replace(src, dst):
  if is_remote(src):
    tf().io.gfile.rename(src, dst, overwrite=True)
  else:
    os.replace(src, dst)


def savez(path, **arrays):
  """np.savez to `path` through a temporary file, so a killed process never leaves a half-written file."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with open(path + ".tmp", "wb") as f:
    np.savez(f, **arrays)
  replace(path + ".tmp", path)


def append(path, text):
  if is_remote(path):
    old = read_text(path) if exists(path) else ""
    with open(path, "w") as f:
      f.write(old + text)
  else:
    with open(path, "a") as f:
      f.write(text)


def read_text(path):
  with open(path) as f:
    return f.read()


def write_text(path, text):
  with open(path, "w") as f:
    f.write(text)


def sha256(path):
  """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
