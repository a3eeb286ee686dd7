"""facenet-pytorch MTCNN PNet, RNet and ONet (models/mtcnn.py) in Flax, NHWC.

Convs with bias and VALID padding, per-channel PReLU, ceil-mode max pools. RNet/ONet flatten in torch after
`permute(0, 3, 2, 1)`, i.e. in (W, H, C) order: here `x.transpose(0, 2, 1, 3)` on NHWC gives the same order, so
dense kernels are a plain transpose. The kernels are spatially transposed upstream (Caffe heritage) and are copied
as they are. Outputs match upstream: PNet (box regression, face probability) as NHWC maps; RNet (box, prob); ONet
(box, landmarks, prob). Probabilities are a softmax over the two classes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import Preprocessing


def _conv(x, ch, k, name):
  x = layers.Conv(ch, k, name=name)(x)
  return layers.PReLU(name=name.replace("conv", "prelu"))(x)


class PNet(nn.Module):
  """`valid`: a boolean [H - 2, W - 2] map of the conv1 outputs that read real pixels of one image (None: all do),
  for zero-padded inputs or several pyramid levels packed in one canvas. The others are set to -inf before the
  ceil-mode pool, so the last pooled row and column of each image see only its pixels, as in torch's ceil-mode
  pool on the image alone. On CPU, conv1 to pool1 is conv_prelu_pool (same values)."""

  @nn.compact
  def __call__(self, x, valid=None):
    if layers.cpu_form() and not self.is_initializing():
      p = self.variables["params"]
      x = conv_prelu_pool(x, p["conv1"]["kernel"], p["conv1"]["bias"], p["prelu1"]["weight"], valid)
    else:
      x = _conv(x, 10, 3, "conv1")
      if valid is not None:
        x = jnp.where(valid[None, :, :, None], x, -jnp.inf)
      x = layers.max_pool(x, 2, 2, ceil_mode=True)
    if valid is not None:  # Pooled cells wholly in the padding: finite, and dropped by the caller.
      x = jnp.where(jnp.isfinite(x), x, 0.0)
    x = _conv(_conv(x, 16, 3, "conv2"), 32, 3, "conv3")
    prob = jax.nn.softmax(nn.Conv(2, (1, 1), name="conv4_1")(x), axis=-1)
    box = nn.Conv(4, (1, 1), name="conv4_2")(x)
    return box, prob


def conv_prelu_pool(x, w, b, alpha, valid=None):
  """PNet's conv1 (3x3 VALID, kernel w [3, 3, C, F], bias b), PReLU (alpha [F]), the `valid` mask (PNet's; None:
  all valid) and 2x2/2 ceil-mode max pool, computed as one 4x4 stride-2 convolution whose 4F outputs are the conv1
  outputs at the 4 positions of each pooling window (the kernel w placed at the 4 offsets), then the max of the 4
  groups: no conv1 output map, no strided windows. Odd sides are zero-padded by one and the extra outputs masked.
  Values equal the plain form to float32 rounding; on the 1280x1408 canvas of a 1080p photo 59 ms against 82-105
  ms."""
  h, wd = x.shape[1:3]
  he, we = h + h % 2, wd + wd % 2
  x = jnp.pad(x, ((0, 0), (0, he - h), (0, we - wd), (0, 0)))
  valid = jnp.ones((h - 2, wd - 2), bool) if valid is None else valid
  valid = jnp.pad(valid, ((0, he - h), (0, we - wd)))
  k = jnp.zeros((4, 4) + w.shape[2:3] + (2, 2) + w.shape[3:], w.dtype)
  for i in range(2):
    for j in range(2):
      k = k.at[i:i + 3, j:j + 3, :, i, j, :].set(w)
  f = w.shape[3]
  y = jax.lax.conv_general_dilated(x, k.reshape(4, 4, -1, 4 * f), (2, 2), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y + jnp.tile(b, 4)
  y = jnp.where(y >= 0, y, jnp.tile(alpha, 4) * y)
  groups = [jnp.where(valid[None, i::2, j::2, None], y[..., (2 * i + j) * f:(2 * i + j + 1) * f], -jnp.inf)
            for i in range(2) for j in range(2)]
  return jnp.maximum(jnp.maximum(groups[0], groups[1]), jnp.maximum(groups[2], groups[3]))


def _flatten_whc(x):
  return x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)


class RNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = layers.max_pool(_conv(x, 28, 3, "conv1"), 3, 2, ceil_mode=True)
    x = layers.max_pool(_conv(x, 48, 3, "conv2"), 3, 2, ceil_mode=True)
    x = _conv(x, 64, 2, "conv3")
    x = layers.PReLU(name="prelu4")(nn.Dense(128, name="dense4")(_flatten_whc(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense5_1")(x), axis=-1)
    return nn.Dense(4, name="dense5_2")(x), prob


class ONet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = layers.max_pool(_conv(x, 32, 3, "conv1"), 3, 2, ceil_mode=True)
    x = layers.max_pool(_conv(x, 64, 3, "conv2"), 3, 2, ceil_mode=True)
    x = layers.max_pool(_conv(x, 64, 3, "conv3"), 2, 2, ceil_mode=True)
    x = _conv(x, 128, 2, "conv4")
    x = layers.PReLU(name="prelu5")(nn.Dense(256, name="dense5")(_flatten_whc(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense6_1")(x), axis=-1)
    return nn.Dense(4, name="dense6_2")(x), nn.Dense(10, name="dense6_3")(x), prob



def _net(name, module, side):
  pp = Preprocessing(side, side, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
  return Backbone(f"mtcnn_{name.lower()}", module, pp, 0, "", torch_ref=reference(name), kind="mtcnn",
                  note=f"facenet-pytorch data/{name.lower()}.pt")


BACKBONES = (_net("PNet", PNet, 12), _net("RNet", RNet, 24), _net("ONet", ONet, 48))
