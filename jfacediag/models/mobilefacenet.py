"""MobileFaceNet (Chen et al. 2018): the common 1M-parameter face network, as its two widely used PyTorch ports.

Stem conv 3x3/2 (64) and a depthwise 3x3 (64), then 15 inverted-residual bottlenecks (1x1 expand, depthwise 3x3,
1x1 project; residual where the stride is 1 and the width is kept), conv 1x1 (512), a global depthwise conv (GDC:
a depthwise conv whose kernel covers the whole 7-row map, no padding), then a linear layer and BatchNorm: the
embedding (not L2-normalised; both upstreams normalise it for their cosines). Every conv is bias-free and followed
by BatchNorm (eps 1e-5) and, except the projections, the GDC and the embedding, per-channel PReLU.

- `mobilefacenet`: TreB1eN/InsightFace_Pytorch `model.py` MobileFaceNet(512) on 112x112 ArcFace crops, pixels
  (x - 127.5) / 127.5 RGB (its test transform: ToTensor, Normalize(0.5, 0.5) on PIL RGB). Key names
  `conv1.conv`, `conv_23.conv_dw.bn`, `conv_3.model.0.project.conv`, `conv_6_dw`, `linear`, `bn`.
- `mobilefacenet_112x96`: Xiaoccer/MobileFaceNet_Pytorch `core/model.py` MobileFacenet: the GDC kernel is 7x6
  because it was trained on SphereFace's 112x96 crops, and the embedding is 128-d from a 1x1 conv (`linear1`). Its
  checkpoints (`model/best/068.ckpt`) are legacy torch files holding {'epoch', 'net_state_dict'}, read by
  torch.load(weights_only=True). Pixels (x - 127.5) / 128 RGB (its LFW loader on scipy's RGB imread). SphereFace's
  96x112 template is ArcFace's 112x112 one moved 8 px left (insightface adds 8 to x for 112x112), and the
  least-squares similarity onto a translated template is the same transform translated: the central 96 columns of
  an arcface112 crop are the 112x96 crop, pixel for pixel. The module takes the square arcface112 crop like every
  other backbone here and keeps those columns itself.

Flax module names follow TreB1eN; the converter maps Xiaoccer's `blocks.N.conv.K` Sequential indices onto them.
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import Preprocessing

# (flax name, expansion width, output width, stride) of the 15 bottlenecks, TreB1eN's names (Xiaoccer's setting
# [t, c, n, s] = [2, 64, 5, 2], [4, 128, 1, 2], [2, 128, 6, 1], [4, 128, 1, 2], [2, 128, 2, 1] is the same net).
BLOCKS = (("conv_23", 128, 64, 2), *((f"conv_3_{i}", 128, 64, 1) for i in range(4)), ("conv_34", 256, 128, 2),
          *((f"conv_4_{i}", 256, 128, 1) for i in range(6)), ("conv_45", 512, 128, 2),
          *((f"conv_5_{i}", 256, 128, 1) for i in range(2)))


class ConvBN(nn.Module):
  """Conv (no bias) + BatchNorm [+ PReLU]: TreB1eN's Conv_block / Linear_block, Xiaoccer's ConvBlock."""
  features: int
  kernel: int  # 3 (stride `stride`, padding 1) or 1.
  stride: int = 1
  depthwise: bool = False
  linear: bool = False  # No PReLU.
  train: bool = False

  @nn.compact
  def __call__(self, x):
    if self.depthwise:
      x = layers.DepthwiseConv(self.kernel, self.stride, self.kernel // 2, name="conv")(x)
    elif self.kernel == 1:
      x = layers.PointwiseConv(self.features, self.stride, name="conv")(x)
    else:
      x = layers.Conv(self.features, self.kernel, self.stride, self.kernel // 2, use_bias=False, name="conv")(x)
    x = layers.torch_batch_norm(self.train)(name="bn")(x)
    return x if self.linear else layers.PReLU(name="prelu")(x)


class DepthWise(nn.Module):
  """TreB1eN's Depth_Wise (Xiaoccer's Bottleneck): 1x1 expand, depthwise 3x3, 1x1 project [+ x]."""
  groups: int
  features: int
  stride: int
  train: bool = False

  @nn.compact
  def __call__(self, x):
    out = ConvBN(self.groups, 1, train=self.train, name="conv")(x)
    out = ConvBN(self.groups, 3, self.stride, depthwise=True, train=self.train, name="conv_dw")(out)
    out = ConvBN(self.features, 1, linear=True, train=self.train, name="project")(out)
    return out + x if self.stride == 1 and x.shape[-1] == self.features else out


class GlobalDepthwiseConv(nn.Module):
  """Depthwise conv whose kernel (kh, kw, 1, C) covers the whole map, no padding: (N, kh, kw, C) -> (N, C)."""
  kernel: Sequence[int]

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    w = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, 1, x.shape[-1])).astype(x.dtype)
    if x.shape[1:3] != (kh, kw):
      raise ValueError(f"MobileFaceNet's GDC reads a {kh}x{kw} map (a {16 * kh}x{16 * kw} input); got "
                       f"{x.shape[1]}x{x.shape[2]}")
    return jnp.einsum("nhwc,hwc->nc", x, w[:, :, 0, :])


class MobileFaceNet(nn.Module):
  embedding: int = 512
  width: int = 112  # Input columns the net reads: 96 keeps the centre of a square crop (Xiaoccer's 112x96).
  conv_embedding: bool = False  # Xiaoccer: a 1x1 conv + BatchNorm2d (`linear1`); TreB1eN: Linear + BatchNorm1d.

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.shape[2] < self.width:
      raise ValueError(f"MobileFaceNet reads {self.width} columns; got a {x.shape[1]}x{x.shape[2]} input")
    left = (x.shape[2] - self.width) // 2
    x = x[:, :, left:left + self.width]
    x = ConvBN(64, 3, 2, train=train, name="conv1")(x)
    x = ConvBN(64, 3, depthwise=True, train=train, name="conv2_dw")(x)
    for name, groups, features, stride in BLOCKS:
      x = DepthWise(groups, features, stride, train=train, name=name)(x)
    x = ConvBN(512, 1, train=train, name="conv_6_sep")(x)
    x = GlobalDepthwiseConv((7, self.width // 16), name="conv_6_dw")(x)
    x = layers.torch_batch_norm(train)(name="conv_6_dw_bn")(x)
    if self.conv_embedding:
      x = layers.PointwiseConv(self.embedding, name="linear1_conv")(x[:, None, None, :])[:, 0, 0]
      return layers.torch_batch_norm(train)(name="linear1_bn")(x)
    x = nn.Dense(self.embedding, use_bias=False, name="linear")(x)
    return layers.torch_batch_norm(train)(name="bn")(x)


def _xiaoccer_names():
  """Flax paths -> Xiaoccer's keys: bottleneck i's Sequential holds conv, bn, prelu of the expansion (0-2), of the
  depthwise conv (3-5) and conv, bn of the projection (6, 7)."""
  inner = {"conv/conv": 0, "conv/bn": 1, "conv/prelu": 2, "conv_dw/conv": 3, "conv_dw/bn": 4, "conv_dw/prelu": 5,
           "project/conv": 6, "project/bn": 7}
  rules = [(rf"^{name}/{part}$", f"blocks.{i}.conv.{k}") for i, (name, *_) in enumerate(BLOCKS)
           for part, k in inner.items()]
  return tuple(rules) + ((r"^conv2_dw/", "dw_conv1/"), (r"^conv_6_sep/", "conv2/"), (r"^conv_6_dw$", "linear7/conv"),
                         (r"^conv_6_dw_bn$", "linear7/bn"), (r"^linear1_(conv|bn)$", r"linear1/\1"))


_TREB1EN_NAMES = ((r"^conv_(\d)_(\d+)/", r"conv_\1/model/\2/"), (r"^conv_6_dw$", "conv_6_dw/conv"),
                  (r"^conv_6_dw_bn$", "conv_6_dw/bn"))
NOTE_TREB1EN = "TreB1eN/InsightFace_Pytorch model.py MobileFaceNet(512): model_mobilefacenet.pth"
NOTE_XIAOCCER = "Xiaoccer/MobileFaceNet_Pytorch core/model.py MobileFacenet: model/best/068.ckpt (legacy torch file)"
BACKBONES = (
    Backbone("mobilefacenet", MobileFaceNet, Preprocessing(112, 112, "RGB", (127.5,) * 3, (127.5,) * 3), 512,
             "embedding: BatchNorm1d `bn` after `linear` (512)", "arcface112", "conv_6_sep",
             torch_ref=reference("TreB1eNMobileFaceNet"), rename=_TREB1EN_NAMES, note=NOTE_TREB1EN),
    Backbone("mobilefacenet_112x96", lambda: MobileFaceNet(128, 96, conv_embedding=True),
             Preprocessing(112, 112, "RGB", (127.5,) * 3, (128.0,) * 3), 128,
             "embedding: BatchNorm2d `linear1.bn` after the 1x1 conv (128)", "arcface112", "conv_6_sep",
             torch_ref=reference("XiaoccerMobileFacenet"), rename=_xiaoccer_names(), note=NOTE_XIAOCCER),
)
