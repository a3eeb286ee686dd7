"""Reading checkpoint files into {key: numpy array} without ever executing code from them.

Formats: PyTorch zip and legacy pickles (`torch.load(weights_only=True)`), safetensors (parsed here), and pickled
dicts of numpy arrays (the VGGFace2 `.pkl` release; a restricted unpickler that admits only array
reconstruction). A state_dict nested under `state_dict` / `model` / `net_state_dict` and `module.` prefixes are
unwrapped.
"""
import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np


class UnsafeCheckpoint(ValueError):
  """The file asks to run code (or load a class) that a weights file has no business loading."""


_NUMPY_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # Protocol-2 pickles store bytes through it.
}


class _ArraysOnly(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _NUMPY_GLOBALS:
      return super().find_class(module, name)
    raise UnsafeCheckpoint(f"refusing to unpickle {module}.{name}: a weights file may only hold numpy arrays in "
                           "dicts (this file would import or run other code)")


def _numpy_pickle(path):
  with open(path, "rb") as f:
    data = f.read()
  if data[:6] == b"\x93NUMPY":  # An object .npy: numpy header, then a pickle.
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    np.lib.format._read_array_header(buf, version)  # pylint: disable=protected-access
    obj = _ArraysOnly(buf, encoding="latin1").load()
    obj = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj
  else:
    obj = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
  return obj


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _safetensors(path):
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
    data = f.read()
  out = {}
  for key, info in header.items():
    if key == "__metadata__":
      continue
    start, end = info["data_offsets"]
    raw = data[start:end]
    if info["dtype"] == "BF16":  # numpy has no bfloat16: widen to float32 by shifting into the high half.
      arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      arr = np.frombuffer(raw, _SAFETENSORS_DTYPES[info["dtype"]])
    else:
      raise ValueError(f"{path}: unsupported safetensors dtype {info['dtype']} for {key}")
    out[key] = arr.reshape(info["shape"]).copy()
  return out


def _torch(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{path} is a PyTorch file: install torch to read it (pip install -e '.[dev]')") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    raise UnsafeCheckpoint(f"torch.load(weights_only=True) refused {path}: {str(e).splitlines()[0]} "
                           "(the file holds more than tensors; jfacediag never loads such files)") from e

  def to_numpy(x):
    if isinstance(x, torch.Tensor):
      x = x.detach().cpu()
      return (x.float() if x.is_floating_point() else x).numpy()
    if isinstance(x, dict):
      return {k: to_numpy(v) for k, v in x.items()}
    return x
  return to_numpy(obj)


def _is_torch_legacy(path):
  with open(path, "rb") as f:
    head = f.read(64)
  # Legacy torch.save starts with a pickled magic number (protocol 2: 0x80 0x02 0x8a 0x0a ...).
  return head[:2] == b"\x80\x02" and head[2:3] == b"\x8a"


def sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _unwrap(obj, path):
  for key in ("state_dict", "model", "net_state_dict", "model_state_dict"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
  out = {}
  for k, v in obj.items():
    k = k[len("module."):] if k.startswith("module.") else k
    if not isinstance(v, np.ndarray):
      if np.isscalar(v):
        v = np.asarray(v)
      else:
        raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not an array")
    out[k] = v
  return out


def read(path):
  """Returns the state_dict in `path` as {key: numpy array}; raises UnsafeCheckpoint rather than run code."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--src {path!r} does not exist")
  if os.path.getsize(path) < 16:
    raise ValueError(f"{path} is {os.path.getsize(path)} bytes: not a checkpoint")
  with open(path, "rb") as f:
    head = f.read(16)
  if head.startswith(b"<") or head.lstrip().startswith(b"<!DOCTYPE"):
    raise ValueError(f"{path} starts with '<': an HTML page saved instead of the weights (a failed download?)")
  if path.endswith(".safetensors"):
    obj = _safetensors(path)
  elif zipfile.is_zipfile(path) or _is_torch_legacy(path):
    obj = _torch(path)
  else:
    obj = _numpy_pickle(path)
  return _unwrap(obj, path)
