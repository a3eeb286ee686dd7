"""facenet-pytorch InceptionResnetV1 (models/inception_resnet_v1.py) in Flax: 160x160 input, 512-d embedding.

Names mirror the torch modules, with `_N` for nn.Sequential indices (`repeat_1_0/branch1_1/conv` ->
`repeat_1.0.branch1.1.conv`). BatchNorm eps 1e-3 everywhere (TF-slim). `__call__` returns the output of `last_bn`,
the embedding before the L2 normalisation facenet-pytorch applies when `classify=False`.
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import Preprocessing


class BasicConv2d(nn.Module):
  out: int
  kernel: tuple
  stride: int = 1
  padding: tuple = (0, 0)
  train: bool = False

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.out, self.kernel, self.stride, ((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = layers.torch_batch_norm(self.train, 1e-3)(
                     name="bn")(x)
    return nn.relu(x)


def _seq(x, name, specs, bc):
  """An nn.Sequential of BasicConv2d: specs = [(out, kernel, stride, padding)]; names `name_0`, `name_1`, ..."""
  for i, (out, k, s, p) in enumerate(specs):
    x = bc(out, k, s, p, name=f"{name}_{i}")(x)
  return x


class Block(nn.Module):
  """Block35 (kind 35), Block17 (17) and Block8 (8): branches, concat, 1x1 conv with bias, scale, residual."""
  kind: int
  scale: float
  relu: bool = True
  train: bool = False

  @nn.compact
  def __call__(self, x):
    bc = functools.partial(BasicConv2d, train=self.train)
    ch = x.shape[-1]
    if self.kind == 35:
      branches = [bc(32, (1, 1), name="branch0")(x),
                  _seq(x, "branch1", [(32, (1, 1), 1, (0, 0)), (32, (3, 3), 1, (1, 1))], bc),
                  _seq(x, "branch2", [(32, (1, 1), 1, (0, 0)), (32, (3, 3), 1, (1, 1)), (32, (3, 3), 1, (1, 1))], bc)]
    elif self.kind == 17:
      branches = [bc(128, (1, 1), name="branch0")(x),
                  _seq(x, "branch1", [(128, (1, 1), 1, (0, 0)), (128, (1, 7), 1, (0, 3)), (128, (7, 1), 1, (3, 0))],
                       bc)]
    else:
      branches = [bc(192, (1, 1), name="branch0")(x),
                  _seq(x, "branch1", [(192, (1, 1), 1, (0, 0)), (192, (1, 3), 1, (0, 1)), (192, (3, 1), 1, (1, 0))],
                       bc)]
    out = nn.Conv(ch, (1, 1), name="conv2d")(jnp.concatenate(branches, -1))
    out = out * self.scale + x
    return nn.relu(out) if self.relu else out


class InceptionResnetV1(nn.Module):
  dropout: float = 0.6

  @nn.compact
  def __call__(self, x, train: bool = False):
    bc = functools.partial(BasicConv2d, train=train)
    x = bc(32, (3, 3), 2, name="conv2d_1a")(x)
    x = bc(32, (3, 3), 1, name="conv2d_2a")(x)
    x = bc(64, (3, 3), 1, (1, 1), name="conv2d_2b")(x)
    x = layers.max_pool(x, 3, 2)
    x = bc(80, (1, 1), 1, name="conv2d_3b")(x)
    x = bc(192, (3, 3), 1, name="conv2d_4a")(x)
    x = bc(256, (3, 3), 2, name="conv2d_4b")(x)
    for i in range(5):
      x = Block(35, 0.17, train=train, name=f"repeat_1_{i}")(x)
    x = _Mixed6a(train=train, name="mixed_6a")(x)
    for i in range(10):
      x = Block(17, 0.10, train=train, name=f"repeat_2_{i}")(x)
    x = _Mixed7a(train=train, name="mixed_7a")(x)
    for i in range(5):
      x = Block(8, 0.20, train=train, name=f"repeat_3_{i}")(x)
    x = Block(8, 1.0, relu=False, train=train, name="block8")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(512, use_bias=False, name="last_linear")(x)
    return layers.torch_batch_norm(train, 1e-3)(name="last_bn")(x)


class _Mixed6a(nn.Module):
  train: bool = False

  @nn.compact
  def __call__(self, x):
    bc = functools.partial(BasicConv2d, train=self.train)
    return jnp.concatenate([
        bc(384, (3, 3), 2, name="branch0")(x),
        _seq(x, "branch1", [(192, (1, 1), 1, (0, 0)), (192, (3, 3), 1, (1, 1)), (256, (3, 3), 2, (0, 0))], bc),
        layers.max_pool(x, 3, 2)], -1)


class _Mixed7a(nn.Module):
  train: bool = False

  @nn.compact
  def __call__(self, x):
    bc = functools.partial(BasicConv2d, train=self.train)
    return jnp.concatenate([
        _seq(x, "branch0", [(256, (1, 1), 1, (0, 0)), (384, (3, 3), 2, (0, 0))], bc),
        _seq(x, "branch1", [(256, (1, 1), 1, (0, 0)), (256, (3, 3), 2, (0, 0))], bc),
        _seq(x, "branch2", [(256, (1, 1), 1, (0, 0)), (256, (3, 3), 1, (1, 1)), (256, (3, 3), 2, (0, 0))], bc),
        layers.max_pool(x, 3, 2)], -1)


BACKBONES = (
    Backbone("inception_resnet_v1", InceptionResnetV1,
             Preprocessing(160, 160, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)), 512,
             "embedding: `last_bn` before L2 normalisation (512)", "facenet160", "block8",
             torch_ref=reference("InceptionResnetV1", 8631),
             rename=((r"repeat_(\d)_(\d+)", r"repeat_\1.\2"), (r"(branch\d)_(\d)", r"\1.\2")), head="logits",
             verify_size=80, classes=(8631, 10575),
             note="facenet-pytorch 20180402-114759-vggface2.pt (8631) or 20180408-102900-casia-webface.pt (10575)"),
)
