"""ResNet (torchvision layout: v1.5, stride on the 3x3 conv) in Flax Linen, NHWC, with explicit torch padding.

Module names follow torchvision's state_dict keys (`conv1`, `bn1`, `layer1_0/conv1`, `layer1_0/downsample_conv`),
so a converter maps `layer1.0.conv1.weight` -> `layer1_0/conv1/kernel` by rule. `__call__` returns the
feature layer: the globally average-pooled output of the last stage (2048-d for ResNet-50).
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _pad(p):
  return ((p, p), (p, p))


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
      x = nn.Conv(self.planes, (1, 1), self.stride, _pad(0), use_bias=False, name="downsample_conv")(x)
      x = self.bn(name="downsample_bn")(x)
    return nn.relu(out + x)


class Bottleneck(nn.Module):
  planes: int
  stride: int
  bn: callable
  downsample: bool
  expansion = 4

  @nn.compact
  def __call__(self, x):
    out = nn.Conv(self.planes, (1, 1), 1, _pad(0), use_bias=False, name="conv1")(x)
    out = nn.relu(self.bn(name="bn1")(out))
    out = nn.Conv(self.planes, (3, 3), self.stride, _pad(1), use_bias=False, name="conv2")(out)
    out = nn.relu(self.bn(name="bn2")(out))
    out = nn.Conv(self.planes * 4, (1, 1), 1, _pad(0), use_bias=False, name="conv3")(out)
    out = self.bn(name="bn3")(out)
    if self.downsample:
      x = nn.Conv(self.planes * 4, (1, 1), self.stride, _pad(0), use_bias=False, name="downsample_conv")(x)
      x = self.bn(name="downsample_bn")(x)
    return nn.relu(out + x)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block: str = "basic"  # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50 and deeper).
  width: int = 64
  bn_eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    # momentum 0.9 in Flax's convention is torch's 0.1; use_fast_variance=False matches torch's two-pass variance.
    bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=self.bn_eps,
                           use_fast_variance=False)
    block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    x = nn.Conv(self.width, (7, 7), 2, _pad(3), use_bias=False, name="conv1")(x)
    x = nn.relu(bn(name="bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), _pad(1))
    in_ch = self.width
    for i, n in enumerate(self.stage_sizes):
      planes = self.width * 2**i
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        down = j == 0 and (stride != 1 or in_ch != planes * block_cls.expansion)
        x = block_cls(planes, stride, bn, down, name=f"layer{i + 1}_{j}")(x)
        in_ch = planes * block_cls.expansion
    return jnp.mean(x, axis=(1, 2))
