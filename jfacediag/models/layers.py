"""Layers that PyTorch checkpoints need and Flax lacks: per-channel PReLU, ceil-mode max pooling, torch's
adaptive average pooling, and layers that run fast on CPU: Conv, PointwiseConv and DepthwiseConv have
nn.Conv's parameters and another computation where XLA:CPU is slow; BatchNorm (nn.BatchNorm's variables) and
max_pool have another gradient. Padding is always explicit (README: Converting face-recognition weights).

The CPU forms are the default for programs that run on CPU (a TPU or GPU step gets the plain layers, whatever host
traces it: cpu.jit); JFACEDIAG_CPU_LAYERS=0 turns them off (the plain layers, as on GPU and TPU),
which is how tools/bench_convs.py and `python -m jfacediag.bench` measure what they gain.
"""
import contextlib
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jfacediag import cpu
from jfacediag.models import winograd


_AS_CONVOLUTIONS = [False]


@contextlib.contextmanager
def as_convolutions():
  """Traces every layer in its plain form on every backend (jfacediag.flops counts conv ops)."""
  _AS_CONVOLUTIONS[0] = True
  try:
    yield
  finally:
    _AS_CONVOLUTIONS[0] = False


def cpu_form():
  """Whether layers take their CPU forms here: the program being traced runs on CPU (cpu.target_platform(), not
  the host's backend), JFACEDIAG_CPU_LAYERS is not 0, and FLOPs are not being counted."""
  return cpu.target_platform() == "cpu" and not _AS_CONVOLUTIONS[0] and cpu.cpu_layers()


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride, padding):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_DN)


# Fewer input channels (an RGB stem, MTCNN's narrow convs): the direct convolution is faster (MTCNN ONet's 32 -> 64
# on 256 crops of 23x23, forward: 35 ms Winograd, 25 ms direct; its 64 -> 64 on 10x10: 6 ms, 8 ms).
WINOGRAD_MIN_CHANNELS = 64


class Conv(nn.Module):
  """nn.Conv(features, (k, k), stride, padding) with a square kernel and explicit symmetric padding: the same
  parameters (`kernel` (k, k, C_in, C_out), `bias`) and initialisers.

  On CPU a 3x3 stride-1 conv with at least WINOGRAD_MIN_CHANNELS input channels is winograd.conv3x3 (2.25x fewer
  multiply-adds, output and both gradients: 28x28x256 at batch 8, forward and both gradients, 64 ms against 135 ms
  for XLA's convolution and 105 ms for PyTorch's; tools/bench_convs.py); other convs, and every conv on other
  backends, are the plain convolution (on CPU Eigen's, under cpu.COMPILER_OPTIONS).
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
    y = self.convolve(x, w) if cpu_form() else _conv(x, w, self.stride, pad(self.padding))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(x.dtype)
    return y

  def convolve(self, x, w):
    """The CPU form."""
    if self.kernel_size == 3 and self.stride == 1 and x.shape[-1] >= WINOGRAD_MIN_CHANNELS:
      return winograd.conv3x3(x, w, self.padding)
    return _conv(x, w, self.stride, pad(self.padding))


def torch_batch_norm(train, epsilon=1e-5):
  """BatchNorm as torch's: momentum 0.9 in Flax's convention is torch's 0.1, and use_fast_variance=False is
  torch's two-pass variance. epsilon is per architecture (set in each model file)."""
  return functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, epsilon=epsilon,
                           use_fast_variance=False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon):
  """(y, mean, var) of BatchNorm on batch statistics over every axis but the last: two-pass biased variance,
  y = (x - mean) * rsqrt(var + epsilon) * scale + bias, as nn.BatchNorm(use_fast_variance=False) computes them.
  Its gradient is the closed form (one pass for the two sums, one for dx) instead of autodiff's chain of
  reductions and broadcasts."""
  return _bn_fwd(x, scale, bias, epsilon)[0]


def _bn_stats(x):
  axes = tuple(range(x.ndim - 1))
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axes)
  return mean, jnp.mean(jnp.square(x - mean), axes)


def _bn_fwd(x, scale, bias, epsilon):
  mean, var = _bn_stats(x)
  inv = jax.lax.rsqrt(var + epsilon)
  a = inv * scale  # y = x * a + (bias - mean * a): x - mean is then only read by the variance's reduction, which
  y = (x.astype(jnp.float32) * a + (bias - mean * a)).astype(x.dtype)  # XLA fuses instead of writing it out.
  return (y, mean, var), (x, mean, inv, scale)


def _bn_fwd_rule(x, scale, bias, epsilon):
  return _bn_fwd(x.value, scale.value, bias.value, epsilon)


def _bn_bwd(epsilon, res, cts):
  del epsilon
  x, mean, inv, scale = res
  g, g_mean, g_var = cts
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  g = g.astype(jnp.float32)
  xhat = (x.astype(jnp.float32) - mean) * inv
  d_bias = jnp.sum(g, axes)
  d_scale = jnp.sum(g * xhat, axes)
  dx = (scale * inv) * (g - (d_bias + xhat * d_scale) / n)
  if not isinstance(g_mean, SymbolicZero):  # mean and var only feed the running statistics: no cotangent in training.
    dx = dx + g_mean / n
  if not isinstance(g_var, SymbolicZero):
    dx = dx + g_var * (2.0 / n) * (xhat / inv)
  return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


batch_norm_train.defvjp(_bn_fwd_rule, _bn_bwd, symbolic_zeros=True)


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm (same variables and results) whose training step on CPU is batch_norm_train: XLA:CPU runs
  autodiff's backward pass of nn.BatchNorm as many separate reductions and broadcasts."""

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    if (use_running_average or mask is not None or self.axis != -1 or self.axis_name or self.use_fast_variance
        or not (self.use_scale and self.use_bias) or self.is_initializing() or not cpu_form()):
      return super().__call__(x, None if self.use_running_average is not None else use_running_average, mask=mask)
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32), bias.astype(jnp.float32), self.epsilon)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


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
  convolution, gradients included (56x56, 64 -> 128 channels, batch 16: 24 ms vs 77 ms on 2 cores, PyTorch 36 ms;
  tools/bench_convs.py); on CPU its gradients are `pointwise`'s. The same numbers up to float summation order.
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features)).astype(x.dtype)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    if cpu_form():
      return pointwise(x, w[0, 0])
    return jnp.einsum("nhwc,cd->nhwd", x, w[0, 0])


@jax.custom_vjp
def pointwise(x, w):
  """x (..., C) @ w (C, D) whose gradients are two plain matrix products over the rows of x: dx = g w^T and
  dw = x^T g contracted over the rows in place. Autodiff's einsum transpose asks for g^T, which XLA:CPU writes
  out as a transposed copy (ResNet-50 at 224, batch 8: ~290 ms of a 2.3 s train step)."""
  return jnp.dot(x, w)


def _pointwise_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _pointwise_bwd(res, g):
  x, w = res
  rows = x.reshape(-1, x.shape[-1])
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
  dw = jax.lax.dot_general(rows, g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())))
  return dx, dw


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv without bias (torch `groups=C`): the parameter of nn.Conv(feature_group_count=C),
  `kernel` (k, k, 1, C), with the same initialiser.

  On CPU it is `depthwise`: k*k strided multiply-adds with their own gradient. XLA:CPU runs a grouped convolution
  and its gradients far slower (forward and both gradients, `python tools/bench_convs.py depthwise`: 56x56x128 at
  batch 16, 41 ms against 1170 ms, PyTorch 31-140 ms; SFace's 112x112x64 stride 2 at batch 8, 46 ms against
  537 ms, PyTorch 15 ms), and the results agree to float rounding. Other backends use the grouped convolution.
  """
  kernel_size: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    k, s, p, c = self.kernel_size, self.stride, self.padding, x.shape[-1]
    w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c)).astype(x.dtype)
    if not cpu_form():
      return jax.lax.conv_general_dilated(x, w, (s, s), pad(p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          feature_group_count=c)
    return depthwise(x, w[:, :, 0], s, p)


def _taps(xp, k, s, rows, cols):
  """The k*k strided views of the padded input xp that output (rows, cols) reads, tap (a, b) at a*k + b."""
  return [xp[:, a:a + s * (rows - 1) + 1:s, b:b + s * (cols - 1) + 1:s] for a in range(k) for b in range(k)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise(x, w, s, p):
  """Depthwise convolution of NHWC x with w (k, k, C), stride s, symmetric padding p: the sum of k*k strided views
  times their tap. Autodiff's gradient of that form saves the k*k views and recomputes the incoming gradient for
  each (SFace at 112, batch 8: ~280 ms of op time per train step in a profile); this one saves x, computes dx as
  one correlation of the (dilated) gradient with the flipped kernel, and dw with the batch summed by elementwise
  adds before the reductions (~95 ms)."""
  return _depthwise_fwd(x, w, s, p)[0]


def _depthwise_fwd(x, w, s, p):
  k = w.shape[0]
  rows, cols = (x.shape[1] + 2 * p - k) // s + 1, (x.shape[2] + 2 * p - k) // s + 1
  views = _taps(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), k, s, rows, cols)
  return functools.reduce(jnp.add, [v * w[t // k, t % k] for t, v in enumerate(views)]), (x, w)


def _depthwise_bwd(s, p, res, g):
  x, w = res
  k = w.shape[0]
  n, rows, cols, c = g.shape
  hp, wp = x.shape[1] + 2 * p, x.shape[2] + 2 * p
  zero = jnp.zeros((), g.dtype)
  g = jax.lax.optimization_barrier(g)  # Else XLA recomputes g (BatchNorm's and PReLU's gradients) for every use.
  # dxp[s*i + a] += g[i] * w[a]: g dilated by s, padded by k - 1 around, correlated with the flipped kernel.
  gd = jax.lax.pad(g, zero, ((0, 0, 0), (k - 1, hp - s * (rows - 1) - 1, s - 1),
                             (k - 1, wp - s * (cols - 1) - 1, s - 1), (0, 0, 0)))
  dxp = functools.reduce(jnp.add, [gd[:, k - 1 - a:k - 1 - a + hp, k - 1 - b:k - 1 - b + wp] * w[a, b]
                                   for a in range(k) for b in range(k)])
  dx = dxp[:, p:p + x.shape[1], p:p + x.shape[2]]
  # dw[a, b] = sum over n, i, j of view(a, b) * g. Adding the n images elementwise first keeps each view in a loop
  # fusion; XLA:CPU's reductions would take each view as a copy (SFace: 134 ms for dw against 78).
  views = _taps(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), k, s, rows, cols)
  per_image = jnp.stack([functools.reduce(jnp.add, [v[i] * g[i] for i in range(n)]) for v in views])
  return dx, jnp.sum(per_image, (1, 2)).reshape(k, k, c)


depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def pad(p):
  """Symmetric explicit padding for nn.Conv / nn.max_pool: ((p, p), (p, p))."""
  return ((p, p), (p, p))


def _ceil_extra(size, k, s, p):
  out = math.ceil((size + 2 * p - k) / s) + 1
  if (out - 1) * s >= size + p:  # torch drops a last window that starts in the right padding.
    out -= 1
  return max(0, (out - 1) * s + k - size - 2 * p)


def max_pool(x, k, s, p=0, ceil_mode=False):
  """torch.nn.MaxPool2d(k, s, p, ceil_mode) on NHWC; ceil mode pads the high side with -inf as torch does.
  On CPU the gradient is pooled_max's (torch's: each window's gradient goes to its first maximum)."""
  eh, ew = (_ceil_extra(x.shape[1], k, s, p), _ceil_extra(x.shape[2], k, s, p)) if ceil_mode else (0, 0)
  padding = ((p, p + eh), (p, p + ew))
  if cpu_form():
    return pooled_max(x, k, s, padding, x.shape[1:3])
  return nn.max_pool(x, (k, k), (s, s), padding)


def _windows(x, k, s, padding):
  """The k*k strided views of x padded with -inf, in torch's scan order (row by row)."""
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
  return _taps(xp, k, s, (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def pooled_max(x, k, s, padding, size):
  """nn.max_pool(x, (k, k), (s, s), padding) whose gradient goes to the first maximum of each window in row-major
  order, as torch's and XLA's do, computed from the index of that maximum (one byte per output) saved by the
  forward pass: XLA:CPU's select-and-scatter builds index arrays of the padded input (ResNet-50 at 224, batch 8:
  about 100 ms of the train step). The output is a maximum of strided slices, not a reduce_window: XLA:CPU's
  YNNPACK reduction fusion took VGG-16's last pool into one 1.1 s fusion with fc6 and fc7. size: x's (rows,
  columns)."""
  del size
  return functools.reduce(jnp.maximum, _windows(x, k, s, padding))


def _pooled_max_fwd(x, k, s, padding, size):
  del size
  views = _windows(x, k, s, padding)
  y = functools.reduce(jnp.maximum, views)
  first = jnp.full(y.shape, k * k - 1, jnp.int8)
  for i in reversed(range(k * k - 1)):
    first = jnp.where(views[i] == y, jnp.int8(i), first)
  return y, first


def _pooled_max_bwd(k, s, padding, size, first, g):
  (pt, _), (pl, _) = padding
  _, ho, wo, _ = g.shape
  hp, wp = s * (ho - 1) + k, s * (wo - 1) + k  # The padded rows and columns some window reads.
  zero = jnp.zeros((), g.dtype)
  dx = 0
  for a in range(k):
    for b in range(k):
      part = jnp.where(first == a * k + b, g, zero)
      dx = dx + jax.lax.pad(part, zero, ((0, 0, 0), (a, hp - a - s * (ho - 1) - 1, s - 1),
                                         (b, wp - b - s * (wo - 1) - 1, s - 1), (0, 0, 0)))
  # Back to x's rows and columns: drop the low padding; windows may stop short of x's last rows (floor mode).
  return (jax.lax.pad(dx, zero, ((0, 0, 0), (-pt, pt + size[0] - hp, 0), (-pl, pl + size[1] - wp, 0), (0, 0, 0))),)


pooled_max.defvjp(_pooled_max_fwd, _pooled_max_bwd)


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
