"""ResNet in Flax Linen, NHWC, with explicit torch padding: torchvision's layout and the Caffe-style VGGFace2 one.

- torchvision (v1.5): stride on the 3x3 conv of a bottleneck; stem max pool 3x3 s2 p1.
- caffe (VGGFace2 ResNet-50 / SE-ResNet-50, cydonia999/VGGFace2-pytorch): stride on the first 1x1 conv; stem max
  pool 3x3 s2 p0 with ceil_mode. `se=True` adds the squeeze-excitation convs `conv4`/`conv5` of each bottleneck.

Module names follow torchvision's state_dict keys (`conv1`, `bn1`, `layer1_0/conv1`, `layer1_0/downsample_conv`),
so the converter maps `layer1.0.conv1.weight` -> `layer1_0/conv1/kernel` by rule. `__call__` returns the
feature layer: the globally average-pooled output of the last stage (2048-d for ResNet-50). The bias-free 1x1
convs are layers.PointwiseConv (a matrix product) and the stem is layers.ImageConv (im2col), with nn.Conv's
parameters: XLA:CPU trains them much faster.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jfacediag.models import layers

_pad = layers.pad


class BasicBlock(nn.Module):
  planes: int
  stride: int
  bn: callable
  downsample: bool
  expansion = 1

  @nn.compact
  def __call__(self, x):
    out = nn.Conv(self.planes, (3, 3), self.stride, _pad(1), use_bias=False, name="conv1")(x)
    out = nn.relu(self.bn(name="bn1")(out))
    out = nn.Conv(self.planes, (3, 3), 1, _pad(1), use_bias=False, name="conv2")(out)
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
    out = nn.Conv(self.planes, (3, 3), s2, _pad(1), use_bias=False, name="conv2")(out)
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
    # momentum 0.9 in Flax's convention is torch's 0.1; use_fast_variance=False matches torch's two-pass variance.
    bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                           use_fast_variance=False)
    block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    x = layers.ImageConv(self.width, 7, 2, 3, use_bias=False, name="conv1")(x)
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
