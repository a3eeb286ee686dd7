"""Layers that PyTorch checkpoints need and Flax lacks: per-channel PReLU, ceil-mode max pooling, torch's
adaptive average pooling, a depthwise conv that trains fast on CPU. Padding is always explicit (README: Converting
face-recognition weights)."""
import contextlib
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


_AS_CONVOLUTIONS = [False]


@contextlib.contextmanager
def as_convolutions():
  """Traces ImageConv and DepthwiseConv as convolutions on every backend (jfacediag.flops counts conv ops)."""
  _AS_CONVOLUTIONS[0] = True
  try:
    yield
  finally:
    _AS_CONVOLUTIONS[0] = False


def _cpu_form():
  return jax.default_backend() == "cpu" and not _AS_CONVOLUTIONS[0]


def torch_batch_norm(train, epsilon=1e-5):
  """nn.BatchNorm as torch's: momentum 0.9 in Flax's convention is torch's 0.1, and use_fast_variance=False is
  torch's two-pass variance. epsilon is per architecture (set in each model file)."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=epsilon,
                           use_fast_variance=False)


class PReLU(nn.Module):
  """torch.nn.PReLU(C): one slope per channel (last axis), initialised to 0.25. Param name: `weight`."""

  @nn.compact
  def __call__(self, x):
    a = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, a * x)


class PointwiseConv(nn.Module):
  """1x1 conv without bias or padding: the parameter of nn.Conv(features, (1, 1), stride), `kernel`
  (1, 1, C_in, C_out).

  Computed as a matrix product on every `stride`-th pixel, which XLA:CPU runs ~3x faster than the 1x1
  convolution, gradients included (56x56, 64 -> 128 channels, batch 16: 130 ms vs 369 ms on 2 cores,
  tools/bench_convs.py); the same numbers up to float summation order.
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features)).astype(x.dtype)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    return jnp.einsum("nhwc,cd->nhwd", x, w[0, 0])


class ImageConv(nn.Module):
  """A k x k conv on the RGB image (the stem): the parameters of nn.Conv (`kernel` (k, k, 3, C)[, `bias`]).

  On CPU it is computed as im2col (k*k strided slices, concatenated) and one matrix product: XLA:CPU computes the
  weight gradient of a 3-channel convolution slowly (ResNet-50's 7x7/2 stem at 224 px, batch 8, weight gradient
  alone: 399 ms as a convolution, 140 ms this way; tools/bench_convs.py times both gradients); the outputs agree
  exactly. Other backends use the convolution.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k, s, p = self.kernel_size, self.stride, self.padding
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)).astype(x.dtype)
    if not _cpu_form():
      y = jax.lax.conv_general_dilated(x, w, (s, s), pad(p), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      ho, wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
      cols = jnp.concatenate([xp[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :]
                              for a in range(k) for b in range(k)], -1)
      y = jnp.einsum("nhwc,cd->nhwd", cols, w.reshape(-1, self.features))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(x.dtype)
    return y


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv without bias (torch `groups=C`): the parameter of nn.Conv(feature_group_count=C),
  `kernel` (k, k, 1, C), with the same initialiser.

  On CPU it is computed as k*k strided multiply-adds: XLA:CPU runs the gradient of a grouped convolution about 10x
  slower than this form (56x56x128, batch 16: 1.59 s vs 0.17 s, tools/bench_convs.py), and the results agree to
  float rounding. Other backends use the grouped convolution.
  """
  kernel_size: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    k, s, p, c = self.kernel_size, self.stride, self.padding, x.shape[-1]
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c)).astype(x.dtype)
    if not _cpu_form():
      return jax.lax.conv_general_dilated(x, w, (s, s), pad(p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          feature_group_count=c)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
    out = 0
    for a in range(k):
      for b in range(k):
        out = out + xp[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :] * w[a, b, 0]
    return out


def pad(p):
  """Symmetric explicit padding for nn.Conv / nn.max_pool: ((p, p), (p, p))."""
  return ((p, p), (p, p))


def _ceil_extra(size, k, s, p):
  out = math.ceil((size + 2 * p - k) / s) + 1
  if (out - 1) * s >= size + p:  # torch drops a last window that starts in the right padding.
    out -= 1
  return max(0, (out - 1) * s + k - size - 2 * p)


def max_pool(x, k, s, p=0, ceil_mode=False):
  """torch.nn.MaxPool2d(k, s, p, ceil_mode) on NHWC; ceil mode pads the high side with -inf as torch does."""
  if not ceil_mode:
    return nn.max_pool(x, (k, k), (s, s), pad(p))
  eh, ew = _ceil_extra(x.shape[1], k, s, p), _ceil_extra(x.shape[2], k, s, p)
  return nn.max_pool(x, (k, k), (s, s), ((p, p + eh), (p, p + ew)))


def adaptive_avg_pool(x, out):
  """torch.nn.AdaptiveAvgPool2d(out) on NHWC: bin i covers [floor(i*H/out), ceil((i+1)*H/out))."""
  h, w = x.shape[1], x.shape[2]
  if h == w == out:
    return x
  rows = []
  for i in range(out):
    r0, r1 = (i * h) // out, -(-((i + 1) * h) // out)
    cols = [jnp.mean(x[:, r0:r1, (j * w) // out:-(-((j + 1) * w) // out)], axis=(1, 2)) for j in range(out)]
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
