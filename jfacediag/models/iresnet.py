"""insightface arcface_torch iResNet-18/34/50/100 (backbones/iresnet.py) in Flax: 112x112 input, 512-d embedding.

Stem conv3x3 + BN + per-channel PReLU (no max pool); IBasicBlock = BN, conv3x3, BN, PReLU, conv3x3 (stride on
the second), BN, + shortcut, no activation after the add; head BN2d -> flatten -> dropout -> fc -> BN1d
(`features`). The torch flatten is NCHW: the converter permutes fc's kernel rows. `__call__` returns the output of
`features` (not L2-normalised). BN eps 1e-5.
"""
from collections.abc import Sequence

import flax.linen as nn

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import Preprocessing


class IBasicBlock(nn.Module):
  planes: int
  stride: int
  bn: callable
  downsample: bool

  @nn.compact
  def __call__(self, x):
    out = self.bn(name="bn1")(x)
    out = layers.Conv(self.planes, 3, 1, 1, use_bias=False, name="conv1")(out)
    out = self.bn(name="bn2")(out)
    out = layers.PReLU(name="prelu")(out)
    out = layers.Conv(self.planes, 3, self.stride, 1, use_bias=False, name="conv2")(out)
    out = self.bn(name="bn3")(out)
    if self.downsample:
      x = layers.PointwiseConv(self.planes, self.stride, name="downsample_conv")(x)
      x = self.bn(name="downsample_bn")(x)
    return out + x


class IResNet(nn.Module):
  stage_sizes: Sequence[int]
  num_features: int = 512
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = layers.torch_batch_norm(train, 1e-5)
    x = layers.Conv(64, 3, 1, 1, use_bias=False, name="conv1")(x)
    x = layers.PReLU(name="prelu")(bn(name="bn1")(x))
    in_ch = 64
    for i, n in enumerate(self.stage_sizes):
      planes = 64 * 2**i
      for j in range(n):
        stride = 2 if j == 0 else 1
        x = IBasicBlock(planes, stride, bn, j == 0 and (stride != 1 or in_ch != planes), name=f"layer{i + 1}_{j}")(x)
        in_ch = planes
    x = bn(name="bn2")(x)
    if x.shape[1:3] != (7, 7):
      raise ValueError(f"iResNet needs a 112x112 input (fc reads 7x7x512); got a {x.shape[1]}x{x.shape[2]} map")
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0)(x)
    x = nn.Dense(self.num_features, name="fc")(x)
    return bn(name="features")(x)


DEPTHS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
          "iresnet100": (3, 13, 30, 3)}
ARCFACE = Preprocessing(112, 112, "RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
BACKBONES = tuple(
    Backbone(name, (lambda d=depths: IResNet(d)), ARCFACE, 512, "embedding: BN1d `features` (512)", "arcface112",
             "bn2", torch_ref=reference("IResNet", layers=depths),
             rename=((r"layer(\d)_(\d+)", r"layer\1.\2"), (r"downsample_conv", "downsample.0"),
                     (r"downsample_bn", "downsample.1")),
             nchw={"fc": (512, 7, 7)}, note="insightface arcface_torch backbone.pth (or its .onnx export)")
    for name, depths in DEPTHS.items())
