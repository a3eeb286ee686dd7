"""Layers that PyTorch checkpoints need and Flax lacks: per-channel PReLU, ceil-mode max pooling, torch's
adaptive average pooling. Padding is always explicit (conversion.md §3)."""
import math

import flax.linen as nn
import jax.numpy as jnp


class PReLU(nn.Module):
  """torch.nn.PReLU(C): one slope per channel (last axis), initialised to 0.25. Param name: `weight`."""

  @nn.compact
  def __call__(self, x):
    a = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, a * x)


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
