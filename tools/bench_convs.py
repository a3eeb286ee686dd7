r"""Times single convolutions, forward and both gradients: XLA's convolution, jfacediag's CPU layers, PyTorch.

  python tools/bench_convs.py [depthwise ...]     # only the cases whose name holds one of the words

Reproduces the figures quoted in jfacediag/models/layers.py and the README's benchmark section: depthwise 3x3s
(56x56x128, batch 16; SFace's 112x112x64 stride 2, batch 8), a 1x1 conv (56x56, 64 -> 128, batch 16), ResNet-50's
7x7/2 stem (224 px, batch 8) and 3x3 convs (224x224x64, 112x112x64, 56x56x64, 56x56x128, 28x28x256, 14x14x512,
112x112x64 stride 2; batch 8; the stride-1 ones are Winograd on CPU) and MTCNN's narrow 3x3 convs (PNet's on a
207x335 canvas, ONet's on 256 crops), each as XLA's convolution under jax.jit's defaults, as the layers.py form
that replaces it on CPU under jfacediag's compiler options (cpu.jit), and PyTorch's conv2d on all cores. Also
prints the largest difference between the two JAX forms.
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jfacediag import cpu
from jfacediag.models import layers


def _ms(fn, n=3):
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(n):
    jax.block_until_ready(fn())
  return (time.perf_counter() - t) / n * 1e3


def _conv(x, w, stride, pad, groups=1):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), layers.pad(pad),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _torch_ms(shape, w_shape, stride, pad, groups):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  n, h, w, c = shape
  x = torch.randn(n, c, h, w, requires_grad=True)
  k = torch.randn(w_shape[3], c // groups, w_shape[0], w_shape[1], requires_grad=True)

  def step():
    y = torch.nn.functional.conv2d(x, k, stride=stride, padding=pad, groups=groups)
    (y ** 2).sum().backward()
  step()
  t = time.perf_counter()
  for _ in range(3):
    step()
  return (time.perf_counter() - t) / 3 * 1e3


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("words", nargs="*", help="time only the cases whose name holds one of these words")
  return ap.parse_args(sys.argv[1:] if argv is None else argv)


def main(argv=None):
  words = parse(argv).words
  rng = np.random.default_rng(0)
  cases = [  # name, input NHWC, kernel HWIO, stride, padding, groups, the layers.py module
      ("depthwise 3x3", (16, 56, 56, 128), (3, 3, 1, 128), 1, 1, 128, layers.DepthwiseConv(3, 1, 1)),
      ("depthwise 3x3/2", (8, 112, 112, 64), (3, 3, 1, 64), 2, 1, 64, layers.DepthwiseConv(3, 2, 1)),  # SFace's.
      ("1x1 conv", (16, 56, 56, 64), (1, 1, 64, 128), 1, 0, 1, layers.PointwiseConv(128)),
      ("stem 7x7/2", (8, 224, 224, 3), (7, 7, 3, 64), 2, 3, 1, layers.Conv(64, 7, 2, 3, use_bias=False)),
      ("3x3 conv", (8, 224, 224, 64), (3, 3, 64, 64), 1, 1, 1, layers.Conv(64, 3, 1, 1, use_bias=False)),
      ("3x3 conv", (8, 112, 112, 64), (3, 3, 64, 64), 1, 1, 1, layers.Conv(64, 3, 1, 1, use_bias=False)),
      ("3x3 conv", (8, 56, 56, 64), (3, 3, 64, 64), 1, 1, 1, layers.Conv(64, 3, 1, 1, use_bias=False)),
      ("3x3 conv", (8, 56, 56, 128), (3, 3, 128, 128), 1, 1, 1, layers.Conv(128, 3, 1, 1, use_bias=False)),
      ("3x3 conv", (8, 28, 28, 256), (3, 3, 256, 256), 1, 1, 1, layers.Conv(256, 3, 1, 1, use_bias=False)),
      ("3x3 conv", (8, 14, 14, 512), (3, 3, 512, 512), 1, 1, 1, layers.Conv(512, 3, 1, 1, use_bias=False)),
      ("3x3/2 conv", (8, 112, 112, 64), (3, 3, 64, 128), 2, 1, 1, layers.Conv(128, 3, 2, 1, use_bias=False)),
      ("MTCNN PNet conv3", (1, 207, 335, 16), (3, 3, 16, 32), 1, 0, 1, layers.Conv(32, 3, use_bias=False)),
      ("MTCNN ONet conv2", (256, 23, 23, 32), (3, 3, 32, 64), 1, 0, 1, layers.Conv(64, 3, use_bias=False)),
      ("MTCNN ONet conv3", (256, 10, 10, 64), (3, 3, 64, 64), 1, 0, 1, layers.Conv(64, 3, use_bias=False)),
  ]
  chosen = [c for c in cases if not words or any(word in c[0] for word in words)]
  if not chosen:
    sys.exit(f"no case name holds any of {words}; the cases: {', '.join(c[0] for c in cases)}")
  cases = chosen
  print(f"{'':30s} {'XLA conv fwd':>13s} {'+grads':>9s} {'layers.py fwd':>14s} {'+grads':>9s} {'torch +grads':>13s}  "
        "largest relative difference (output, d input, d kernel)")
  for name, shape, w_shape, stride, pad, groups, module in cases:
    name = f"{name} {'x'.join(map(str, shape[1:]))}->{w_shape[3]}"
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape) * 0.05, jnp.float32)
    conv = jax.jit(lambda x, w, s=stride, p=pad, g=groups: _conv(x, w, s, p, g))
    grad = jax.jit(jax.grad(lambda x, w, s=stride, p=pad, g=groups: (_conv(x, w, s, p, g) ** 2).sum(), (0, 1)))
    v = {"params": {"kernel": w}}
    fwd = cpu.jit(lambda v, x, m=module: m.apply(v, x))
    bwd = cpu.jit(jax.grad(lambda v, x, m=module: (m.apply(v, x) ** 2).sum(), (0, 1)))
    row = [_ms(lambda: conv(x, w)), _ms(lambda: grad(x, w)), _ms(lambda: fwd(v, x)), _ms(lambda: bwd(v, x))]
    rel = lambda a, b: float(jnp.abs(a - b).max() / jnp.abs(b).max())
    ours, ref = bwd(v, x), grad(x, w)
    diff = f"{rel(fwd(v, x), conv(x, w)):.1e} {rel(ours[1], ref[0]):.1e} {rel(ours[0]['params']['kernel'], ref[1]):.1e}"
    try:
      row.append(_torch_ms(shape, w_shape, stride, pad, groups))
    except ImportError:
      row.append(float("nan"))
    print(f"{name:30s} {row[0]:10.0f} ms {row[1]:6.0f} ms {row[2]:11.0f} ms {row[3]:6.0f} ms {row[4]:10.0f} ms  "
          f"{diff}")


if __name__ == "__main__":
  main()
