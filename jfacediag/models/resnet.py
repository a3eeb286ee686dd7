"""ResNet in Flax Linen, NHWC, with explicit torch padding: torchvision's layout and the Caffe-style VGGFace2 one.

- torchvision (v1.5): stride on the 3x3 conv of a bottleneck; stem max pool 3x3 s2 p1.
- caffe (VGGFace2 ResNet-50 / SE-ResNet-50, cydonia999/VGGFace2-pytorch): stride on the first 1x1 conv; stem max
  pool 3x3 s2 p0 with ceil_mode. `se=True` adds the squeeze-excitation convs `conv4`/`conv5` of each bottleneck.

Module names follow torchvision's state_dict keys (`conv1`, `bn1`, `layer1_0/conv1`, `layer1_0/downsample_conv`),
so the converter maps `layer1.0.conv1.weight` -> `layer1_0/conv1/kernel` by rule. `__call__` returns the
feature layer: the globally average-pooled output of the last stage (2048-d for ResNet-50). The bias-free 1x1
convs are layers.PointwiseConv (a matrix product) and the others layers.Conv (Winograd for the stride-1 3x3 ones),
with nn.Conv's parameters: XLA:CPU trains them much faster (layers.py).
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import IMAGENET, Preprocessing



class BasicBlock(nn.Module):
  planes: int
  stride: int
  bn: callable
  downsample: bool
  expansion = 1

  @nn.compact
  def __call__(self, x):
    out = layers.Conv(self.planes, 3, self.stride, 1, use_bias=False, name="conv1")(x)
    out = nn.relu(self.bn(name="bn1")(out))
    out = layers.Conv(self.planes, 3, 1, 1, use_bias=False, name="conv2")(out)
    out = self.bn(name="bn2")(out)
    if self.downsample:
      x = layers.PointwiseConv(self.planes, self.stride, name="downsample_conv")(x)
      x = self.bn(name="downsample_bn")(x)
    return nn.relu(out + x)


class Bottleneck(nn.Module):
  planes: int
  stride: int
  bn: callable
  downsample: bool
  caffe: bool = False  # Stride on conv1 (1x1) instead of conv2 (3x3).
  se: bool = False
  expansion = 4

  @nn.compact
  def __call__(self, x):
    s1, s2 = (self.stride, 1) if self.caffe else (1, self.stride)
    out = layers.PointwiseConv(self.planes, s1, name="conv1")(x)
    out = nn.relu(self.bn(name="bn1")(out))
    out = layers.Conv(self.planes, 3, s2, 1, use_bias=False, name="conv2")(out)
    out = nn.relu(self.bn(name="bn2")(out))
    out = layers.PointwiseConv(self.planes * 4, name="conv3")(out)
    out = self.bn(name="bn3")(out)
    if self.se:  # Squeeze-excitation, compress rate 16 (upstream pools with kernel H: the global mean for H == W).
      w = jnp.mean(out, axis=(1, 2), keepdims=True)
      w = nn.relu(nn.Conv(self.planes * 4 // 16, (1, 1), name="conv4")(w))
      w = nn.sigmoid(nn.Conv(self.planes * 4, (1, 1), name="conv5")(w))
      out = out * w
    if self.downsample:
      x = layers.PointwiseConv(self.planes * 4, self.stride, name="downsample_conv")(x)
      x = self.bn(name="downsample_bn")(x)
    return nn.relu(out + x)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block: str = "basic"  # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50 and deeper).
  width: int = 64
  bn_eps: float = 1e-5
  caffe: bool = False  # VGGFace2 Caffe-style: stride on the 1x1 conv, ceil-mode stem pool without padding.
  se: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = layers.torch_batch_norm(train, self.bn_eps)
    block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    x = layers.Conv(self.width, 7, 2, 3, use_bias=False, name="conv1")(x)
    x = nn.relu(bn(name="bn1")(x))
    x = layers.max_pool(x, 3, 2, 0, ceil_mode=True) if self.caffe else layers.max_pool(x, 3, 2, 1)
    in_ch = self.width
    for i, n in enumerate(self.stage_sizes):
      planes = self.width * 2**i
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        down = j == 0 and (stride != 1 or in_ch != planes * block_cls.expansion)
        extra = {"caffe": self.caffe, "se": self.se} if block_cls is Bottleneck else {}
        x = block_cls(planes, stride, bn, down, name=f"layer{i + 1}_{j}", **extra)(x)
        in_ch = planes * block_cls.expansion
    return jnp.mean(x, axis=(1, 2))  # Caffe style: AvgPool2d(7, stride 1), the same at 224 input.


# torchvision's names: layer1.0.conv1, layer1.0.downsample.0 (conv) / .1 (BN).
RENAME = ((r"layer(\d)_(\d+)", r"layer\1.\2"), (r"downsample_conv", "downsample.0"), (r"downsample_bn", "downsample.1"))
VGGFACE2 = Preprocessing(224, 256, "BGR", (91.4953, 103.8827, 131.0912), (1.0, 1.0, 1.0))


def _resnet(name, stages, block, width=64, pp=IMAGENET, style="paper", cam="", classes=1000, note="", **kw):
  dim = width * 8 * (4 if block == "bottleneck" else 1)
  ref = reference("ResNet", classes, layers=stages, block=block, **kw) if note else None
  return Backbone(name, lambda: ResNet(stages, block, width, **kw), pp, dim, f"global average pool ({dim})", style,
                  cam or f"layer4_{stages[-1] - 1}", torch_ref=ref, rename=RENAME, head="fc",
                  verify_size=64 if pp is IMAGENET else 0, classes=(classes,), note=note)


BACKBONES = (
    _resnet("resnet18", (2, 2, 2, 2), "basic", note="torchvision ImageNet resnet18"),
    _resnet("resnet34", (3, 4, 6, 3), "basic"),
    _resnet("resnet50", (3, 4, 6, 3), "bottleneck", note="torchvision ImageNet resnet50 (resnet50-0676ba61.pth)"),
    # A ResNet-18 shape at 1/8 width and one block per stage: for tests and the toy run (about 0.2M parameters).
    # Its layer4 map is 2x2 at the toy sizes (64 px), too coarse to locate anything: Grad-CAM reads layer3 (4x4).
    _resnet("resnet_tiny", (1, 1, 1, 1), "basic", width=8, style="", cam="layer3_0"),
    _resnet("resnet50_vggface2", (3, 4, 6, 3), "bottleneck", pp=VGGFACE2, style="vggface224", classes=8631,
            note="VGGFace2 Caffe-style ResNet-50 (cydonia999 resnet50_{scratch,ft}_weight.pkl)", caffe=True),
    _resnet("senet50_vggface2", (3, 4, 6, 3), "bottleneck", pp=VGGFACE2, style="vggface224", classes=8631,
            note="VGGFace2 SE-ResNet-50 (cydonia999 senet50_{scratch,ft}_weight.pkl)", caffe=True, se=True),
)
