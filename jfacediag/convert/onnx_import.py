"""ONNX graphs -> Flax variables: dequantise, fold constants, walk the layers in graph order.

Weights come from the graph's initialisers; `DequantizeLinear` (per-tensor, per-axis and blocked, opset 21),
`Reshape`, `Identity` and `Constant` nodes on constants are evaluated here, so int8 models convert to float32.
The remaining Conv / BatchNormalization / PRelu / Gemm nodes, in graph order, fill the Flax module's layers in
their creation order, each matched by kind; any leftover layer, unfilled leaf, shape mismatch or unused initialiser
is an error listing all of them. Needs the `onnx` package (a dependency); `--verify` uses onnxruntime.
"""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jfacediag.convert.mapping import ConversionError
from jfacediag.models import layers as model_layers


def dequantize(q, scale, zero_point=None, axis=1, block_size=0):
  """ONNX DequantizeLinear: (q - zero_point) * scale, scale per tensor, per `axis`, or per block along `axis`."""
  q = np.asarray(q).astype(np.float32)
  scale = np.asarray(scale, np.float32)
  zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point).astype(np.float32)
  if scale.ndim == 0 or scale.size == 1 and q.ndim != scale.ndim:
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


def read_graph(path):
  """Returns (layers, graph constants used by non-layer ops, used initialisers, initialisers the nodes read).

  A layer is (kind, node name, {role: array}, attributes) with kind in conv | bn | prelu | dense.
  """
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading .onnx files needs the `onnx` package (pip install onnx)") from e
  model = onnx.load(path)
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
      used.update(origin.get(name, set()))
      return np.asarray(const[name], np.float32)

    if node.op_type == "Conv":
      layer = {"weight": take(ins[1])}
      if len(ins) > 2 and ins[2]:
        layer["bias"] = take(ins[2])
      layers.append(("conv", node.name or node.output[0], layer, a))
    elif node.op_type == "BatchNormalization":
      layers.append(("bn", node.name or node.output[0], {r: take(i) for r, i in zip(
          ("scale", "bias", "mean", "var"), ins[1:5])}, a))
    elif node.op_type == "PRelu":
      layers.append(("prelu", node.name or node.output[0], {"weight": take(ins[1]).reshape(-1)}, a))
    elif node.op_type == "Gemm":
      w = take(ins[1])
      w = w.T if a.get("transB", 0) else w  # -> [in, out]
      layer = {"kernel": w * a.get("alpha", 1.0)}
      if len(ins) > 2 and ins[2]:
        layer["bias"] = take(ins[2]) * a.get("beta", 1.0)
      layers.append(("dense", node.name or node.output[0], layer, a))
    else:  # Preprocessing (Sub/Mul), Dropout ratios, Flatten: their constants are reported, not mapped.
      for p in params:
        other[f"{node.op_type}:{p}"] = np.asarray(const[p])
        used |= origin.get(p, set())
  referenced = {i for node in g.node for i in node.input}  # Initialisers no node reads are dead weight; skip them.
  return layers, other, used, {i.name for i in g.initializer} & referenced


def _kind(leaves):
  if "kernel" in leaves:
    return "conv" if len(leaves["kernel"]) == 4 else "dense"
  if "scale" in leaves or "mean" in leaves:
    return "bn"
  if set(leaves) == {"weight"}:
    return "prelu"
  raise ConversionError(f"cannot map a Flax module with leaves {sorted(leaves)} from ONNX")


def convert(arch, path):
  """Returns (variables, info) for `arch` from the ONNX file at `path`."""
  layers, other, used, names = read_graph(path)
  s = arch.preprocessing.input_size
  calls = []  # Leaf layers in the order the forward pass calls them (dict keys come back sorted).

  def record(fn, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.BatchNorm, nn.Dense,
                                                                          model_layers.PReLU)):
      calls.append("/".join(context.module.path))
    return fn(*args, **kwargs)

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(arch.module().init, jax.random.key(0, impl="rbg"), jnp.zeros((1, s, s, 3)))
  modules = {}  # Flax module path -> {leaf: (collection, shape)}, in creation order.
  for collection in ("params", "batch_stats"):
    for path_, sds in flax.traverse_util.flatten_dict(flax.core.unfreeze(shapes.get(collection, {}))).items():
      modules.setdefault("/".join(path_[:-1]), {})[path_[-1]] = (collection, sds.shape)
  order = [m for m in dict.fromkeys(calls) if m in modules]
  out, problems, queue = {}, [], list(layers)
  for mod in order:
    leaves = {k: v[1] for k, v in modules[mod].items()}
    kind = _kind(leaves)
    if not queue:
      problems.append(f"- {mod} ({kind}): the graph has no layer left for it")
      continue
    lkind, lname, tensors, _ = queue.pop(0)
    if lkind != kind:
      problems.append(f"! {mod} is a {kind}, the next graph layer {lname} is a {lkind}")
      break
    if kind == "conv":
      tensors = {"kernel": tensors["weight"].transpose(2, 3, 1, 0), **({"bias": tensors["bias"]}
                                                                        if "bias" in tensors else {})}
    if kind == "dense" and mod in arch.nchw:
      c, h, w = arch.nchw[mod]
      k = tensors["kernel"]
      if k.shape[0] == c * h * w:
        tensors = {**tensors, "kernel": k.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)}
    for leaf, (collection, shape) in modules[mod].items():
      if leaf not in tensors:
        problems.append(f"- {collection}/{mod}/{leaf} {shape}: graph layer {lname} has no such tensor")
      elif tensors[leaf].shape != tuple(shape):
        problems.append(f"! {collection}/{mod}/{leaf}: graph {lname} {tensors[leaf].shape}, model {tuple(shape)}")
      else:
        out[(collection, *mod.split("/"), leaf)] = tensors[leaf]
    extra = set(tensors) - set(modules[mod])
    if extra:
      problems.append(f"+ graph layer {lname}: {sorted(extra)} have no place in {mod}")
  problems += [f"+ graph layer {lname} ({lkind}) left over" for lkind, lname, _, _ in queue]
  problems += [f"+ initialiser {n} (not used)" for n in sorted(names - used)]
  if problems:
    raise ConversionError(f"The ONNX graph does not fit --arch {arch.name} ({len(problems)} problems):\n"
                          + "\n".join(problems))
  variables = flax.traverse_util.unflatten_dict(out)
  variables.setdefault("batch_stats", {})
  n = sum(v.size for v in out.values())
  return variables, {"tensors": len(layers), "parameters": int(n), "upstream_classes": 0,
                     "graph_constants": {k: np.asarray(v).tolist() for k, v in other.items() if np.size(v) <= 4}}


def onnxruntime_outputs(path, x_nchw_raw):
  """Runs the graph with onnxruntime on raw (un-normalised) NCHW input; returns the first output."""
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--verify of an .onnx file needs onnxruntime (pip install -e '.[dev]')") from e
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(path)
  read = {i for node in model.graph.node for i in node.input}
  inits = {i.name for i in model.graph.initializer}
  # Some exports (SFace's MXNet one) list every weight as a graph input that no node reads: drop those inputs.
  for inp in [i for i in model.graph.input if i.name not in read or i.name in inits]:
    model.graph.input.remove(inp)
  options = ort.SessionOptions()
  options.log_severity_level = 3
  sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
  name = sess.get_inputs()[0].name
  return np.concatenate([sess.run(None, {name: x_nchw_raw[i:i + 1]})[0] for i in range(len(x_nchw_raw))])
