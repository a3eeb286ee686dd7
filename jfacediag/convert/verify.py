"""--verify: the PyTorch reference and the Flax module, same weights, eval mode, same inputs, max differences."""
import numpy as np

from jfacediag import cpu
from jfacediag.data import images


def _torch_state(arch, state_dict):
  import re  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  for k, v in state_dict.items():
    for rx, rep in arch.src_rename:
      k = re.sub(rx, rep, k)
    out[k] = torch.from_numpy(np.ascontiguousarray(v))
  return out


def torch_outputs(arch, state_dict, x_nchw, num_classes=None):
  """Runs the reference on x (N, C, H, W float32) and returns named numpy outputs."""
  import torch  # pylint: disable=g-import-not-at-top
  model = arch.torch_ref(num_classes)
  result = model.load_state_dict(_torch_state(arch, state_dict), strict=False)
  missing = [k for k in result.missing_keys if not (arch.head and k.startswith(arch.head + "."))]
  if missing or result.unexpected_keys:
    raise ValueError(f"The PyTorch reference of {arch.name} does not take these weights: missing {missing}, "
                     f"unexpected {result.unexpected_keys}")
  model.eval()
  with torch.no_grad():
    out = model(torch.from_numpy(x_nchw))
  if arch.kind == "mtcnn":
    names = {"mtcnn_pnet": ("box", "prob"), "mtcnn_rnet": ("box", "prob"),
             "mtcnn_onet": ("box", "landmarks", "prob")}[arch.name]
    arrays = [o.numpy() for o in out]
    if arch.name == "mtcnn_pnet":  # NCHW maps -> NHWC, as the Flax PNet returns them.
      arrays = [a.transpose(0, 2, 3, 1) for a in arrays]
    return dict(zip(names, arrays))
  feats, logits = out
  res = {"features": feats.numpy()}
  if logits is not None and (not arch.head or f"{arch.head}.weight" in state_dict):
    res["logits"] = logits.numpy()
  return res


def flax_outputs(arch, variables, x_nchw):
  x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
  model_vars = {k: v for k, v in variables.items() if k in ("params", "batch_stats") and v}
  out = cpu.jit(lambda v, x: arch.make().apply(v, x))(model_vars, x)
  if arch.kind == "mtcnn":
    names = ("box", "landmarks", "prob") if arch.name == "mtcnn_onet" else ("box", "prob")
    return {n: np.asarray(o) for n, o in zip(names, out)}
  res = {"features": np.asarray(out)}
  if "upstream_head" in variables:
    h = variables["upstream_head"]
    res["logits"] = res["features"] @ np.asarray(h["kernel"]) + np.asarray(h["bias"])
  return res


def compare(ref, got):
  """{name: (max abs diff, max abs diff / max |ref|)} over the outputs both sides produce."""
  out = {}
  for name in ref:
    if name not in got:
      continue
    d = float(np.max(np.abs(ref[name] - got[name])))
    out[name] = (d, d / max(float(np.max(np.abs(ref[name]))), 1e-12))
  return out


def random_input(arch, size=0, batch=2, seed=0):
  """A batch in the network's normalised input space (unit-variance noise), NCHW float32."""
  s = size or arch.verify_size or arch.preprocessing.input_size
  return np.random.default_rng(seed).normal(0, 1, (batch, 3, s, s)).astype(np.float32)


def image_input(arch, paths, size=0):
  """Real images, resized to the input side and normalised with the arch's preprocessing, NCHW float32."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pp = arch.preprocessing
  s = size or pp.input_size
  batch = []
  for p in paths:
    img = np.asarray(Image.fromarray(images.load_rgb(p)).resize((s, s), Image.BILINEAR), np.float32)
    if pp.channel_order == "BGR":
      img = img[..., ::-1]
    batch.append((img - np.array(pp.mean, np.float32)) / np.array(pp.std, np.float32))
  return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))
