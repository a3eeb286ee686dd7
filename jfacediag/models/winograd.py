"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016): 16 matrix products on
transformed 4x4 input tiles instead of 9 per output pixel, so 2.25x fewer multiply-adds, for the output and both
gradients. The same parameters as the convolution (HWIO kernel); results equal lax.conv_general_dilated to float32
rounding (the transforms only add, subtract and halve).

The layout keeps XLA:CPU's work in forms it runs fast: each transform is a sum of unstrided slices of a reshaped
(space-to-depth) view, one array per tile position, and each of the 16 products is its own matrix product.
layers.Conv uses it on CPU (tools/bench_convs.py times it against the convolution and PyTorch).

Notation: tiles t = (image, tile row, tile column) of 2x2 outputs; p = (i, j), i, j < 4, a position in the 4x4
transformed tile; V[p] (tiles, C_in) = (B^T d B)[i, j], U[p] (C_in, C_out) = (G w G^T)[i, j], M[p] = V[p] U[p],
y = A^T M A per tile.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(coefs, arrays):
  """sum(c * a) over the non-zero coefficients, without multiplying by +-1."""
  out = None
  for c, a in zip(coefs, arrays):
    if c == 0:
      continue
    term = a if c == 1 else -a if c == -1 else a * np.asarray(c, a.dtype)
    out = term if out is None else out + term
  return out


def _tiles(h, w, padding):
  """(tile rows, tile columns, padded rows, padded columns) of a 3x3 stride-1 conv with symmetric `padding`."""
  th, tw = -(-(h + 2 * padding - 2) // 2), -(-(w + 2 * padding - 2) // 2)
  return th, tw, 2 * th + 2, 2 * tw + 2


def _input_transform(x, padding):
  """V: 16 arrays (tiles, C) from x (N, H, W, C)."""
  n, h, w, c = x.shape
  th, tw, hp, wp = _tiles(h, w, padding)
  xp = jnp.pad(x, ((0, 0), (padding, hp - h - padding), (padding, wp - w - padding), (0, 0)))
  xr = xp.reshape(n, th + 1, 2, tw + 1, 2, c)  # Padded row 2 * i + k is xr[:, i + k // 2, k % 2].
  rows = [xr[:, k // 2:k // 2 + th, k % 2] for k in range(4)]
  out = []
  for i in range(4):
    r = _combine(B_T[i], rows)
    cols = [r[:, :, k // 2:k // 2 + tw, k % 2] for k in range(4)]
    out += [_combine(B_T[j], cols).reshape(n * th * tw, c) for j in range(4)]
  return out


def _input_transform_transposed(dv, shape, padding):
  """dx (N, H, W, C) from the cotangents of V: each tile's 4x4 block is added back where it was read (tiles overlap
  by two rows and columns)."""
  n, h, w, c = shape
  th, tw, hp, wp = _tiles(h, w, padding)
  dv = [d.reshape(n, th, tw, c) for d in dv]
  # r[i][k]: cotangent of column k of row-combination i; rows[k]: of row k of the tile.
  r = [[_combine(B_T[:, k], dv[4 * i:4 * i + 4]) for k in range(4)] for i in range(4)]
  rows = [[_combine(B_T[:, k], [r[i][l] for i in range(4)]) for l in range(4)] for k in range(4)]
  # Row k, column l of tile (ti, tj) is padded (2 ti + k, 2 tj + l) = block (ti + k // 2, tj + l // 2), (k % 2, l % 2).
  blocks = []
  for a in range(2):
    row = []
    for b in range(2):
      acc = 0
      for k in (a, a + 2):
        for l in (b, b + 2):
          acc = acc + jnp.pad(rows[k][l], ((0, 0), (k // 2, 1 - k // 2), (l // 2, 1 - l // 2), (0, 0)))
      row.append(acc)
    blocks.append(jnp.stack(row, axis=3))  # (N, th + 1, tw + 1, 2, C)
  dxp = jnp.stack(blocks, axis=2).reshape(n, hp, wp, c)
  return dxp[:, padding:padding + h, padding:padding + w]


def _kernel_transform(w):
  """U: 16 arrays (C_in, C_out) from w (3, 3, C_in, C_out)."""
  gw = [[_combine(G[i], [w[k, l] for k in range(3)]) for l in range(3)] for i in range(4)]
  return [_combine(G[j], gw[i]) for i in range(4) for j in range(4)]


def _kernel_transform_transposed(du):
  """dw (3, 3, C_in, C_out) from the cotangents of U."""
  gi = [[_combine(G[:, l], du[4 * i:4 * i + 4]) for l in range(3)] for i in range(4)]
  return jnp.stack([jnp.stack([_combine(G[:, k], [gi[i][l] for i in range(4)]) for l in range(3)])
                    for k in range(3)])


def _output_transform(m, n, th, tw, h, w):
  """y (N, H, W, C) from M: 16 arrays (tiles, C)."""
  c = m[0].shape[-1]
  m = [a.reshape(n, th, tw, c) for a in m]
  rows = [[_combine(A_T[a], [m[4 * k + j] for k in range(4)]) for j in range(4)] for a in range(2)]
  y = jnp.stack([jnp.stack([_combine(A_T[b], rows[a]) for b in range(2)], axis=3) for a in range(2)], axis=2)
  return y.reshape(n, 2 * th, 2 * tw, c)[:, :h, :w]


def _output_transform_transposed(dy, th, tw):
  """The cotangents of M (16 arrays (tiles, C)) from dy (N, H, W, C): each 2x2 output block spread back over the
  tile's 4x4 positions."""
  n, h, w, c = dy.shape
  dy = jnp.pad(dy, ((0, 0), (0, 2 * th - h), (0, 2 * tw - w), (0, 0))).reshape(n, th, 2, tw, 2, c)
  out = [[dy[:, :, a, :, b] for b in range(2)] for a in range(2)]
  rows = [[_combine(A_T[:, j], out[a]) for j in range(4)] for a in range(2)]
  return [_combine(A_T[:, i], [rows[a][j] for a in range(2)]).reshape(n * th * tw, c)
          for i in range(4) for j in range(4)]


def _forward(x, w, padding):
  n, h, wd, _ = x.shape
  th, tw, _, _ = _tiles(h, wd, padding)
  v, u = _input_transform(x, padding), _kernel_transform(w)
  m = [jnp.dot(a, b) for a, b in zip(v, u)]
  return _output_transform(m, n, th, tw, h + 2 * padding - 2, wd + 2 * padding - 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x, w, padding):
  """lax.conv_general_dilated(x, w, (1, 1), ((padding, padding),) * 2) for NHWC x and a (3, 3, C_in, C_out) w."""
  return _forward(x, w, padding)


def _conv3x3_fwd(x, w, padding):
  return _forward(x, w, padding), (x, w)


def _conv3x3_bwd(padding, res, dy):
  x, w = res
  th, tw, _, _ = _tiles(x.shape[1], x.shape[2], padding)
  dm = _output_transform_transposed(dy, th, tw)
  v, u = _input_transform(x, padding), _kernel_transform(w)  # V is recomputed: 4x the input, not kept.
  contract_cols = (((1,), (1,)), ((), ()))
  dv = [jax.lax.dot_general(d, b, contract_cols) for d, b in zip(dm, u)]  # dM U^T
  du = [jax.lax.dot_general(a, d, (((0,), (0,)), ((), ()))) for a, d in zip(v, dm)]  # V^T dM
  return _input_transform_transposed(dv, x.shape, padding), _kernel_transform_transposed(du).astype(w.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
