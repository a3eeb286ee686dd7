"""ONNX graphs -> Flax variables: dequantise, fold constants, walk the layers in graph order.

Weights come from the graph's initialisers; `DequantizeLinear` (per-tensor, per-axis and blocked, opset 21),
`Reshape`, `Identity` and `Constant` nodes on constants are evaluated here, so int8 models convert to float32.
The remaining Conv / BatchNormalization / PRelu / Gemm nodes, in graph order, fill the Flax module's layers in
the order its forward pass calls them, each matched by kind; any leftover layer, unfilled leaf, shape mismatch or
unused initialiser is an error listing all of them.

Two export habits are undone:
- Folded BatchNorm. PyTorch's exporter (eval mode, constant folding; insightface's `torch2onnx.py`) merges a
  BatchNorm into the conv before it: the conv gains a bias and the BN node disappears. Where the Flax conv has no
  bias and the next Flax layer is its BatchNorm, that BN gets scale 1, bias b, mean 0 and var 1 - eps, which
  computes x + b exactly; the conv keeps the folded kernel. Eval outputs are identical; fine-tuning in train mode
  re-estimates the statistics from batches, as it would for any BN.
- Input normalisation inside the graph (MXNet exports such as SFace start with Sub / Mul on the input). The affine
  map is read off and must equal the architecture's preprocessing (an error shows both otherwise); PyTorch exports
  take the normalised input instead. `input_normalisation` in the result says which, and `--verify` feeds
  onnxruntime accordingly.

Needs the `onnx` package (a dependency); `--verify` uses onnxruntime.
"""
from typing import NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jfacediag.convert import sources
from jfacediag.convert.mapping import ConversionError
from jfacediag.models import layers as model_layers


def dequantize(q, scale, zero_point=None, axis=1, block_size=0):
  """ONNX DequantizeLinear: (q - zero_point) * scale, scale per tensor, per `axis`, or per block along `axis`."""
  q = np.asarray(q).astype(np.float32)
  scale = np.asarray(scale, np.float32)
  zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point).astype(np.float32)
  if scale.ndim == 0 or (scale.size == 1 and q.ndim != scale.ndim):
    return (q - zp.reshape(())) * scale.reshape(())
  axis = axis % q.ndim
  if block_size:
    scale = np.repeat(scale, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
    zp = np.repeat(zp, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
  else:
    shape = [1] * q.ndim
    shape[axis] = -1
    scale, zp = scale.reshape(shape), zp.reshape(shape)
  return (q - zp) * scale


def _attrs(node):
  import onnx  # pylint: disable=g-import-not-at-top
  return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Layer(NamedTuple):
  kind: str  # conv | bn | prelu | dense
  name: str
  tensors: dict  # role -> float32 array
  inp: str  # The data input's tensor name.
  out: str


def _input_affine(g, const):
  """(mean, std) of Sub/Add/Mul/Div-by-constant nodes applied to the graph input, or None if there are none."""
  inits = {i.name for i in g.initializer}
  data = [i.name for i in g.input if i.name not in inits and i.name not in const]
  if not data:
    return None
  cur, a, b, found = data[0], np.float32(1), np.float32(0), False
  while True:
    consumers = [n for n in g.node if cur in n.input]
    if len(consumers) != 1 or consumers[0].op_type not in ("Sub", "Add", "Mul", "Div"):
      break
    node = consumers[0]
    other = [i for i in node.input if i != cur]
    if len(other) != 1 or other[0] not in const or node.input[0] != cur:
      break
    c = np.asarray(const[other[0]], np.float32).reshape(-1)
    if node.op_type == "Sub":
      b = b - c
    elif node.op_type == "Add":
      b = b + c
    elif node.op_type == "Mul":
      a, b = a * c, b * c
    else:
      a, b = a / c, b / c
    cur, found = node.output[0], True
  if not found:
    return None
  mean, std = np.broadcast_to(-b / a, (3,)), np.broadcast_to(1 / a, (3,))
  return [float(m) for m in mean], [float(v) for v in std]


def load_model(path):
  """onnx.load with one-sentence errors: a file that is not an ONNX model, and external data that is missing or
  points outside the model's folder (onnx refuses both; so does jfacediag, naming the file)."""
  import onnx  # pylint: disable=g-import-not-at-top
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  try:
    return onnx.load(path)
  except message.DecodeError as e:
    raise sources.MalformedCheckpoint(f"{path}: not a valid ONNX model (protobuf: {e}); truncated or another "
                                      "format") from e
  except onnx.checker.ValidationError as e:
    text = str(e).strip().splitlines()[0]
    if "outside" in text:
      raise sources.UnsafeCheckpoint(f"{path}: refused: its external data {text.split('but ')[-1]}") from e
    raise sources.MalformedCheckpoint(f"{path}: its external data cannot be read: {text}") from e


def read_graph(path):
  """Returns (layers, graph constants used by non-layer ops, used initialisers, initialisers the nodes read,
  input normalisation (mean, std) done inside the graph or None)."""
  try:
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading .onnx files needs the `onnx` package (pip install onnx)") from e
  model = load_model(path)
  g = model.graph
  const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
  origin = {k: {k} for k in const}  # Constant value -> the initialisers it was computed from.
  layers, used, other = [], set(), {}
  for node in g.node:
    ins, a = list(node.input), _attrs(node)
    if node.op_type == "Constant":
      const[node.output[0]] = numpy_helper.to_array(a["value"])
      origin[node.output[0]] = set()
      continue
    if node.op_type in ("DequantizeLinear", "Reshape", "Identity") and all(i in const for i in ins if i):
      if node.op_type == "DequantizeLinear":
        val = dequantize(const[ins[0]], const[ins[1]], const[ins[2]] if len(ins) > 2 and ins[2] else None,
                         a.get("axis", 1), a.get("block_size", 0))
      elif node.op_type == "Reshape":
        val = const[ins[0]].reshape(const[ins[1]])
      else:
        val = const[ins[0]]
      const[node.output[0]] = val
      origin[node.output[0]] = set().union(*(origin.get(i, set()) for i in ins if i))
      continue
    params = [i for i in ins if i in const]

    def take(name):
      used.update(origin.get(name, set()))  # noqa: B023  (called in this iteration only; `used` is one set)
      return np.asarray(const[name], np.float32)

    def add(kind, tensors, node=node, ins=ins):
      layers.append(Layer(kind, node.name or node.output[0], tensors, ins[0], node.output[0]))

    if node.op_type == "Conv":
      add("conv", {"weight": take(ins[1]), **({"bias": take(ins[2])} if len(ins) > 2 and ins[2] else {})})
    elif node.op_type == "BatchNormalization":
      add("bn", {r: take(i) for r, i in zip(("scale", "bias", "mean", "var"), ins[1:5])})
    elif node.op_type == "PRelu":
      add("prelu", {"weight": take(ins[1]).reshape(-1)})
    elif node.op_type == "Gemm":
      w = take(ins[1])
      w = w.T if a.get("transB", 0) else w  # -> [in, out]
      layer = {"kernel": w * a.get("alpha", 1.0)}
      if len(ins) > 2 and ins[2]:
        layer["bias"] = take(ins[2]) * a.get("beta", 1.0)
      add("dense", layer)
    else:  # Preprocessing (Sub/Mul), Dropout ratios, Flatten: their constants are reported, not mapped.
      for p in params:
        other[f"{node.op_type}:{p}"] = np.asarray(const[p])
        used |= origin.get(p, set())
  referenced = {i for node in g.node for i in node.input}  # Initialisers no node reads are dead weight; skip them.
  return layers, other, used, {i.name for i in g.initializer} & referenced, _input_affine(g, const)


def _kind(leaves):
  if "kernel" in leaves:
    return "conv" if len(leaves["kernel"]) == 4 else "dense"
  if "scale" in leaves or "mean" in leaves:
    return "bn"
  if set(leaves) == {"weight"}:
    return "prelu"
  raise ConversionError(f"cannot map a Flax module with leaves {sorted(leaves)} from ONNX")


def _unfolded_bn(bias, eps):
  """The BatchNorm a folding exporter removed, as one that adds `bias`: (x - 0) / sqrt((1 - eps) + eps) * 1 + b."""
  return {"scale": np.ones_like(bias), "bias": bias, "mean": np.zeros_like(bias),
          "var": np.full_like(bias, 1.0 - eps)}


def _check_normalisation(arch, affine):
  if affine is None:
    return
  pp = arch.preprocessing
  want = (list(pp.mean), list(pp.std))
  if not np.allclose(np.array(affine), np.array(want, np.float32), rtol=1e-5, atol=1e-4):
    raise ConversionError(f"The ONNX graph normalises its input as (x - {affine[0]}) / {affine[1]}; --arch "
                          f"{arch.name} preprocesses with mean {want[0]}, std {want[1]}. Wrong --arch?")


def convert(arch, path):
  """Returns (variables, info) for `arch` from the ONNX file at `path`."""
  layers, other, used, names, affine = read_graph(path)
  _check_normalisation(arch, affine)
  s = arch.preprocessing.input_size
  calls, eps = [], {}  # Leaf layers in the order the forward pass calls them (dict keys come back sorted).

  def record(fn, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, (
        nn.Conv, nn.BatchNorm, nn.Dense, model_layers.PReLU, model_layers.Conv, model_layers.DepthwiseConv,
        model_layers.PointwiseConv)):
      calls.append("/".join(context.module.path))
      if isinstance(context.module, nn.BatchNorm):
        eps[calls[-1]] = context.module.epsilon
    return fn(*args, **kwargs)

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(arch.make().init, jax.random.key(0, impl="rbg"), jnp.zeros((1, s, s, 3)))
  modules = {}  # Flax module path -> {leaf: (collection, shape)}, in creation order.
  for collection in ("params", "batch_stats"):
    for path_, sds in flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes.get(collection, {}))).items():
      modules.setdefault("/".join(path_[:-1]), {})[path_[-1]] = (collection, sds.shape)
  order = [m for m in dict.fromkeys(calls) if m in modules]
  out, problems, queue, folded = {}, [], list(layers), 0
  pending = None  # (graph conv layer, bias) of a conv whose BatchNorm the exporter folded away.
  for mod in order:
    leaves = {k: v[1] for k, v in modules[mod].items()}
    kind = _kind(leaves)
    if pending and kind == "bn" and not (queue and queue[0].kind == "bn" and queue[0].inp == pending[0].out):
      layer, pending, folded = Layer("bn", f"{pending[0].name} (folded BN)", _unfolded_bn(pending[1], eps[mod]),
                                     pending[0].out, pending[0].out), None, folded + 1
    elif not queue:
      problems.append(f"- {mod} ({kind}): the graph has no layer left for it")
      continue
    else:
      layer = queue.pop(0)
    if pending:
      problems.append(f"+ graph layer {pending[0].name}: its bias has no place (the Flax conv has none and no "
                      f"BatchNorm follows it)")
      pending = None
    if layer.kind != kind:
      problems.append(f"! {mod} is a {kind}, the next graph layer {layer.name} is a {layer.kind}")
      break
    tensors = layer.tensors
    if kind == "conv":
      tensors = {"kernel": tensors["weight"].transpose(2, 3, 1, 0), **({"bias": tensors["bias"]}
                                                                        if "bias" in tensors else {})}
      if "bias" in tensors and "bias" not in leaves:
        pending, tensors = (layer, tensors["bias"]), {"kernel": tensors["kernel"]}
    if kind == "dense" and mod in arch.nchw:
      c, h, w = arch.nchw[mod]
      k = tensors["kernel"]
      if k.shape[0] == c * h * w:
        tensors = {**tensors, "kernel": k.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)}
    for leaf, (collection, shape) in modules[mod].items():
      if leaf not in tensors:
        problems.append(f"- {collection}/{mod}/{leaf} {shape}: graph layer {layer.name} has no such tensor")
      elif tensors[leaf].shape != tuple(shape):
        problems.append(f"! {collection}/{mod}/{leaf}: graph {layer.name} {tensors[leaf].shape}, model "
                        f"{tuple(shape)}")
      else:
        out[(collection, *mod.split("/"), leaf)] = tensors[leaf]
    extra = set(tensors) - set(modules[mod])
    if extra:
      problems.append(f"+ graph layer {layer.name}: {sorted(extra)} have no place in {mod}")
  if pending:
    problems.append(f"+ graph layer {pending[0].name}: its bias has no place (the Flax conv has none)")
  problems += [f"+ graph layer {layer.name} ({layer.kind}) left over" for layer in queue]
  problems += [f"+ initialiser {n} (not used)" for n in sorted(names - used)]
  if problems:
    raise ConversionError(f"The ONNX graph does not fit --arch {arch.name} ({len(problems)} problems):\n"
                          + "\n".join(problems))
  variables = flax.traverse_util.unflatten_dict(out)
  variables.setdefault("batch_stats", {})
  n = sum(v.size for v in out.values())
  return variables, {"tensors": len(layers), "parameters": int(n), "upstream_classes": 0, "folded_bn": folded,
                     "input_normalisation": "in graph" if affine else "before the graph",
                     "graph_constants": {k: np.asarray(v).tolist() for k, v in other.items() if np.size(v) <= 4}}


def onnx_input(arch, x_nchw, info):
  """What onnxruntime takes for normalised input x: raw pixels if the graph normalises them itself, else x."""
  if info["input_normalisation"] != "in graph":
    return x_nchw
  pp = arch.preprocessing
  return x_nchw * np.array(pp.std, np.float32)[None, :, None, None] + np.array(pp.mean, np.float32)[None, :, None, None]


def onnxruntime_outputs(path, x_nchw):
  """Runs the graph with onnxruntime on NCHW input (see `onnx_input`); returns the first output."""
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--verify of an .onnx file needs onnxruntime (pip install -e '.[dev]')") from e
  model = load_model(path)
  read = {i for node in model.graph.node for i in node.input}
  inits = {i.name for i in model.graph.initializer}
  # Some exports (SFace's MXNet one) list every weight as a graph input that no node reads: drop those inputs.
  for inp in [i for i in model.graph.input if i.name not in read or i.name in inits]:
    model.graph.input.remove(inp)
  options = ort.SessionOptions()
  options.log_severity_level = 3
  sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
  name = sess.get_inputs()[0].name
  return np.concatenate([sess.run(None, {name: x_nchw[i:i + 1]})[0] for i in range(len(x_nchw))])
