"""The CPU forms of jfacediag.models.layers equal the plain convolution they replace: outputs and both gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfacediag.models import layers

CASES = [  # module, the plain convolution's arguments (kernel_size, stride, padding, feature_group_count), input.
    (layers.Conv(16, 3, 1, 1), (3, 1, 1, 1), (2, 32, 32, 32)),  # Banded weight gradient at the default thresholds.
    pytest.param(layers.Conv(8, 3, 2, 1, use_bias=False), (3, 2, 1, 1), (2, 13, 13, 4),  # Stride 2, odd: 7 rows.
                 marks=pytest.mark.slow),
    pytest.param(layers.Conv(8, 5, 1, 2), (5, 1, 2, 1), (1, 10, 9, 4), marks=pytest.mark.slow),  # 5x5, not square.
    pytest.param(layers.Conv(8, 3, 1, 1), (3, 1, 1, 1), (1, 4, 4, 4),  # 4 rows, under BANDED_MIN_ROWS: XLA's own
                 marks=pytest.mark.slow),  # gradient.
    (layers.PointwiseConv(16, 2), (1, 2, 0, 1), (2, 15, 15, 8)),
    (layers.ImageConv(8, 3, 2, 1, use_bias=False), (3, 2, 1, 1), (2, 20, 20, 3)),
    pytest.param(layers.ImageConv(8, 7, 2, 3, use_bias=False), (7, 2, 3, 1), (2, 20, 20, 3), marks=pytest.mark.slow),
    (layers.DepthwiseConv(3, 2, 1), (3, 2, 1, 8), (2, 21, 21, 8)),
    (layers.BlockedConv(40, 3), (3, 1, 0, 1), (2, 9, 9, 24)),  # Blocks of 16 channels, the last ones narrower.
    pytest.param(layers.BlockedConv(40, 2, use_bias=False), (2, 1, 0, 1), (2, 5, 5, 12),  # Under BLOCK inputs:
                 marks=pytest.mark.slow),  # Conv's own.
]


def _plain(x, kernel, bias, k, s, p, groups):
  y = jax.lax.conv_general_dilated(x, kernel, (s, s), layers.pad(p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=groups)
  return y if bias is None else y + bias


@pytest.mark.parametrize("module,plain,shape", CASES, ids=lambda c: type(c).__name__ if isinstance(c, nn.Module)
                         else None)
def test_cpu_forms_equal_the_plain_convolution_values_and_gradients(module, plain, shape, monkeypatch):
  if shape[1] < layers.BANDED_MIN_ROWS:  # Bands from 5 rows on, at most 3 of them, split over the batch from 20
    monkeypatch.setattr(layers, "BANDED_MIN_ROWS", 5)  # pixels: the same code, less to compile.
    monkeypatch.setattr(layers, "BANDED_MIN_CHANNELS", 1)
    monkeypatch.setattr(layers, "_BANDS", 3)
    monkeypatch.setattr(layers, "_PIECE", 20)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  v = module.init(jax.random.PRNGKey(0), x)
  leaves = v["params"]
  assert set(leaves) <= {"kernel", "bias"} and leaves["kernel"].shape[:2] == (plain[0], plain[0])
  y = module.apply(v, x)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)  # A random cotangent: every output counts.
  ours = jax.jit(jax.grad(lambda v, x: (module.apply(v, x) * g).sum(), (0, 1)))(v, x)
  ref_y = _plain(x, leaves["kernel"], leaves.get("bias"), *plain)
  ref = jax.jit(jax.grad(lambda p, x: (_plain(x, p["kernel"], p.get("bias"), *plain) * g).sum(), (0, 1)))(leaves, x)
  np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref_y).max()))
  for name, got, want in (("d input", ours[1], ref[1]),
                          *((f"d {k}", ours[0]["params"][k], ref[0][k]) for k in leaves)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()), err_msg=name)


def test_conv_has_nn_conv_parameters_and_the_switch_gives_the_plain_convolution(monkeypatch):
  x = jnp.ones((1, 32, 32, 32))
  ours = layers.Conv(8, 3, 1, 1).init(jax.random.PRNGKey(3), x)
  flax_conv = nn.Conv(8, (3, 3), 1, layers.pad(1)).init(jax.random.PRNGKey(3), x)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_conv)
  np.testing.assert_array_equal(ours["params"]["kernel"], flax_conv["params"]["kernel"])  # Same initialiser.

  def convolutions():  # In the weight gradient's program: the output, then one weight gradient (or one per band).
    fn = lambda v, x: (layers.Conv(8, 3, 1, 1).apply(v, x) ** 2).sum()
    return str(jax.make_jaxpr(jax.grad(fn))(ours, x)).count("conv_general_dilated[")
  assert convolutions() >= 2 + len(layers._pieces(1, 32, 32))  # pylint: disable=protected-access
  monkeypatch.setenv("JFACEDIAG_CPU_LAYERS", "0")
  assert convolutions() == 2


def test_pieces_cover_every_output_pixel_once():
  # pylint: disable=protected-access
  for images, rows, cols in ((1, 28, 28), (8, 29, 29), (8, 112, 112), (32, 112, 112), (3, 224, 224)):
    pieces = layers._pieces(images, rows, cols)
    assert len({n for _, _, _, n in pieces}) <= 2 and len(pieces) <= layers._BANDS * images
    assert all(m * n * cols <= layers._PIECE or m == 1 for _, m, _, n in pieces)
    covered = sorted((b + i, r + j) for b, m, r, n in pieces for i in range(m) for j in range(n))
    assert covered == [(i, j) for i in range(images) for j in range(rows)]
