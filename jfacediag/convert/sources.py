"""Reading checkpoint files into {key: numpy array} without ever executing code from them.

Formats: PyTorch zip and legacy pickles (`torch.load(weights_only=True)`), safetensors (parsed and checked here),
`.npz` archives (np.load without pickles), and pickled dicts of numpy arrays (the VGGFace2 `.pkl` release, object
`.npy` files; a restricted unpickler that admits only array reconstruction). A file that cannot be read raises
MalformedCheckpoint with one sentence naming it; one that would run code raises UnsafeCheckpoint. A state_dict
nested under `state_dict` / `model` / `net_state_dict` and `module.` prefixes are unwrapped.
"""
import io
import json
import os
import pickle
import zipfile

import numpy as np


class UnsafeCheckpoint(ValueError):
  """The file asks to run code (or load a class) that a weights file has no business loading."""


class MalformedCheckpoint(ValueError):
  """The file is truncated, corrupt or not the format its name or first bytes say; the message names the file."""


_NUMPY_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),  # numpy 2 arrays at protocol 5.
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
    return _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()


def _npy(path):
  """A .npy file: an object array (a pickled dict, e.g. MTCNN det1.npy) through the restricted unpickler; a plain
  array is refused, since it carries no tensor names."""
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
        version)
    if read_header is None:
      raise MalformedCheckpoint(f"{path}: .npy format version {version} is not supported (1.0 and 2.0 are)")
    shape, _, dtype = read_header(f)
    if dtype.kind != "O":
      raise MalformedCheckpoint(f"{path} holds one {dtype} array of shape {shape}, not named tensors: save a dict "
                                "instead (np.savez(path, **state_dict) or torch.save(state_dict, path))")
    obj = _ArraysOnly(f, encoding="latin1").load()
  return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj


def _npz(path):
  """A .npz archive: one named array per member, read without unpickling (allow_pickle=False)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise UnsafeCheckpoint(f"{path} holds object arrays, which only unpickling could read: refused (a weights "
                             "file needs numeric arrays only)") from e
    raise


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _safetensors(path):
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    if n > os.path.getsize(path) - 8:
      raise MalformedCheckpoint(f"{path}: the safetensors header claims {n} bytes, more than the file holds "
                                "(truncated, or not a safetensors file)")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise MalformedCheckpoint(f"{path}: the safetensors header is not JSON ({e})") from e
    data = f.read()
  if not isinstance(header, dict):
    raise MalformedCheckpoint(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object of "
                              "tensors")
  out = {}
  for key, info in header.items():
    if key == "__metadata__":
      continue
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
      raise MalformedCheckpoint(f"{path}: safetensors entry {key!r} is {json.dumps(info)[:80]}; each tensor needs "
                                "dtype, shape and data_offsets")
    offsets, shape = info["data_offsets"], info["shape"]
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
        or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
      raise MalformedCheckpoint(f"{path}: safetensors entry {key!r} has data_offsets {offsets} and shape {shape}")
    start, end = offsets
    if not 0 <= start <= end <= len(data):
      raise MalformedCheckpoint(f"{path}: safetensors entry {key!r} spans bytes {start}..{end} of a {len(data)}-byte "
                                "data section (truncated file?)")
    raw = data[start:end]
    if info["dtype"] == "BF16":  # numpy has no bfloat16: widen to float32 by shifting into the high half.
      arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      arr = np.frombuffer(raw, _SAFETENSORS_DTYPES[info["dtype"]])
    else:
      raise MalformedCheckpoint(f"{path}: unsupported safetensors dtype {info['dtype']} for {key}")
    if arr.size != int(np.prod(shape)):
      raise MalformedCheckpoint(f"{path}: safetensors entry {key!r} has {arr.size} values for shape {shape}")
    out[key] = arr.reshape(shape).copy()
  return out


def _torch(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{path} is a PyTorch file: install torch to read it (pip install -e '.[dev]')") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    msg = str(e)
    # weights_only's own refusals name the global or the opcode it will not run; anything else is a broken file.
    if "Unsupported global" in msg or "Unsupported operand" in msg or ("GLOBAL" in msg and "not an allowed" in msg):
      line = next((x.strip() for x in msg.splitlines() if "Unsupported" in x), msg.splitlines()[0])
      raise UnsafeCheckpoint(f"torch.load(weights_only=True) refused {path}: {line} (the file holds more than "
                             "tensors; jfacediag never loads such files)") from e
    raise MalformedCheckpoint(f"{path}: torch.load cannot read it ({_first_line(e)}): truncated or corrupt") from e
  except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
    raise MalformedCheckpoint(f"{path}: torch.load cannot read it ({_first_line(e)}): truncated or corrupt") from e

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


def _first_line(e):
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160].rstrip('.')}" if text else type(e).__name__


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
  if path.endswith(".onnx") or head[:2] == b"\x08\x07" or head[:2] == b"\x08\x08":
    raise ValueError(f"{path} is an ONNX model: convert it with an --arch that reads ONNX (sface, iresnet*)")
  if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
    raise MalformedCheckpoint(f"{path}: a zip archive (a PyTorch file or an .npz) whose end is missing: truncated "
                              "(an interrupted download or copy?)")
  is_npz = zipfile.is_zipfile(path) and _npz_members(path)
  try:
    if path.endswith(".safetensors"):
      obj = _safetensors(path)
    elif head.startswith(b"\x93NUMPY"):
      obj = _npy(path)
    elif is_npz:
      obj = _npz(path)
    elif zipfile.is_zipfile(path) or _is_torch_legacy(path):
      obj = _torch(path)
    else:
      obj = _numpy_pickle(path)
  except (UnsafeCheckpoint, MalformedCheckpoint, ImportError):
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError, OSError,
          zipfile.BadZipFile, MemoryError) as e:
    if path.endswith(".safetensors") or head.startswith(b"\x93NUMPY") or is_npz:
      kind = ("a safetensors file" if path.endswith(".safetensors") else "an .npz archive" if is_npz else
              "a .npy file")
      raise MalformedCheckpoint(f"{path}: cannot be read as {kind} ({_first_line(e)}): truncated or corrupt") from e
    raise MalformedCheckpoint(f"{path}: none of the formats jfacediag reads (PyTorch zip or legacy file, "
                              f"safetensors, .npz, a pickle of numpy arrays): {_first_line(e)}. Truncated, corrupt "
                              "or another format") from e
  return _unwrap(obj, path)


def _npz_members(path):
  """True when every member of the zip is a .npy file (np.savez), False for a torch zip."""
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
  return bool(names) and all(n.endswith(".npy") for n in names)
