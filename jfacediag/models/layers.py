"""Layers that PyTorch checkpoints need and Flax lacks: per-channel PReLU, ceil-mode max pooling, torch's
adaptive average pooling, and convolutions that run fast on CPU (Conv, BlockedConv, PointwiseConv, ImageConv,
DepthwiseConv: nn.Conv's parameters, another computation where XLA:CPU is slow). Padding is always explicit
(README: Converting face-recognition weights).

The CPU forms are the default on CPU; JFACEDIAG_CPU_LAYERS=0 turns them off (plain convolutions, as on GPU and TPU),
which is how tools/bench_convs.py and `python -m jfacediag.bench` measure what they gain.
"""
import contextlib
import functools
import math
import os

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
  return (jax.default_backend() == "cpu" and not _AS_CONVOLUTIONS[0]
          and os.environ.get("JFACEDIAG_CPU_LAYERS", "1") != "0")


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DN)


BANDED_MIN_ROWS = 28  # Output rows from which the weight gradient is computed in bands (below, XLA's is as fast),
BANDED_MIN_CHANNELS = 32  # with this many input channels or more (fewer: little to gain, compile time to lose).
_BANDS = 16  # At most this many bands of rows: more are faster to run and slower to compile.
_PIECE = 8192  # At most this many output pixels (images x rows x columns) in one piece of the weight gradient.


def _row_bands(rows):
  """(first row, number of rows) of each band of output rows: at most _BANDS bands of equal height."""
  height = -(-rows // _BANDS)
  return [(r, min(height, rows - r)) for r in range(0, rows, height)]


def _pieces(images, rows, cols):
  """(first image, images, first row, rows) of each piece: bands of rows, each split over the batch so that a piece
  holds at most _PIECE output pixels (XLA:CPU slows down again on larger ones: 112x112x64 at batch 32, 16 bands,
  7.6 s; split into 4 x 8 images, 1.1 s)."""
  bands = _row_bands(rows)
  per = max(1, _PIECE // (bands[0][1] * cols))
  chunk = -(-images // -(-images // per))  # Equal chunks of at most `per` images.
  return [(b, min(chunk, images - b), r, n) for r, n in bands for b in range(0, images, chunk)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def banded_conv(x, w, stride, padding):
  """lax.conv_general_dilated (NHWC, HWIO) whose weight gradient is a sum over pieces: bands of output rows, split
  over the batch (_pieces).

  XLA:CPU computes a 3x3 convolution's weight gradient slowly on large images (one 112x112x64 3x3 conv, batch 8:
  1.2-2.0 s; in 16 bands, 0.24 s). Each piece's gradient is XLA's own, on the images and the rows of the padded
  input that piece reads; their sum is the gradient (same numbers up to float summation order). The output and the
  input gradient are XLA's. tools/bench_convs.py times both.
  """
  return _conv(x, w, stride, padding)


def _banded_fwd(x, w, stride, padding):
  return _conv(x, w, stride, padding), (x, w)


def _banded_bwd(stride, padding, res, g):
  x, w = res
  dx = jax.vjp(lambda x: _conv(x, w, stride, padding), x)[1](g)[0]
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  k = w.shape[0]
  dw = jnp.zeros(w.shape, jnp.float32)
  for b, m, r, n in _pieces(*g.shape[:3]):
    rows = xp[b:b + m, r * stride:(r + n - 1) * stride + k]
    part = jax.vjp(lambda w: _conv(rows, w, stride, ((0, 0), (0, 0))), w)[1](g[b:b + m, r:r + n])[0]
    dw = dw + part.astype(jnp.float32)
  return dx, dw.astype(w.dtype)


banded_conv.defvjp(_banded_fwd, _banded_bwd)


class Conv(nn.Module):
  """nn.Conv(features, (k, k), stride, padding) with a square kernel and explicit symmetric padding: the same
  parameters (`kernel` (k, k, C_in, C_out), `bias`) and initialisers.

  On CPU, from BANDED_MIN_ROWS output rows and BANDED_MIN_CHANNELS input channels on, the weight gradient is
  computed in pieces of rows and images (banded_conv); the output and the input gradient are the plain
  convolution's. Other backends use the plain convolution.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)).astype(x.dtype)
    y = self.convolve(x, w) if _cpu_form() else _conv(x, w, self.stride, pad(self.padding))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(x.dtype)
    return y

  def convolve(self, x, w):
    """The CPU form."""
    s, p = self.stride, self.padding
    rows = (x.shape[1] + 2 * p - self.kernel_size) // s + 1
    if rows >= BANDED_MIN_ROWS and x.shape[-1] >= BANDED_MIN_CHANNELS:
      return banded_conv(x, w, s, pad(p))
    return _conv(x, w, s, pad(p))


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


BLOCK = 16  # Channels per block of BlockedConv.


class BlockedConv(Conv):
  """Conv (nn.Conv's parameters) for the narrow layers of small detectors (MTCNN): on CPU, from BLOCK input
  channels and 2 * BLOCK output channels on, computed as BLOCK x BLOCK channel blocks of the convolution, summed over
  input blocks. XLA:CPU runs the narrow convolution slowly and the blocks fast (forward, float32, 2 cores: PNet's
  16 -> 32 3x3 on a 207x335 canvas 58 ms -> 12 ms, ONet's 32 -> 64 on 256 crops of 23x23 200 -> 106 ms, 64 -> 64 on
  256 x 10x10 65 -> 25 ms; tools/bench_convs.py; MTCNN only runs forward). The same numbers up to float
  summation order.
  """

  def convolve(self, x, w):
    c_in, c_out = w.shape[2], w.shape[3]
    if c_in < BLOCK or c_out < 2 * BLOCK:
      return super().convolve(x, w)
    s, p = self.stride, pad(self.padding)
    outs = []
    for o in range(0, c_out, BLOCK):
      parts = [_conv(x[..., i:i + BLOCK], w[:, :, i:i + BLOCK, o:o + BLOCK], s, p) for i in range(0, c_in, BLOCK)]
      outs.append(functools.reduce(jnp.add, parts))
    return jnp.concatenate(outs, -1)


class ImageConv(Conv):
  """A k x k conv on the RGB image (the stem): the parameters of nn.Conv (`kernel` (k, k, 3, C)[, `bias`]).

  On CPU it is computed as im2col (k*k strided slices, concatenated) and one matrix product: XLA:CPU computes the
  weight gradient of a 3-channel convolution slowly (ResNet-50's 7x7/2 stem at 224 px, batch 8, weight gradient
  alone: 399 ms as a convolution, 140 ms this way; tools/bench_convs.py times both gradients); the outputs agree
  exactly. Other backends use the convolution.
  """

  def convolve(self, x, w):
    k, s, p = self.kernel_size, self.stride, self.padding
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
    cols = jnp.concatenate([xp[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :]
                            for a in range(k) for b in range(k)], -1)
    return jnp.einsum("nhwc,cd->nhwd", cols, w.reshape(-1, self.features))


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
