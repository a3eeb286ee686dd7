"""The CPU forms of jfacediag.models.layers equal what they replace: the plain convolution, nn.BatchNorm and
nn.max_pool (with torch's gradient), outputs and gradients."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfacediag import cpu
from jfacediag.models import layers, winograd

CASES = [  # module, the plain convolution's arguments (kernel_size, stride, padding, feature_group_count), input.
    (layers.Conv(16, 3, 1, 1), (3, 1, 1, 1), (2, 12, 12, 64)),  # Winograd F(2x2, 3x3).
    (layers.Conv(8, 3, 1, 1, use_bias=False), (3, 1, 1, 1), (2, 13, 11, 64)),  # Winograd, odd rows and columns.
    (layers.Conv(8, 3, 1, 0), (3, 1, 0, 1), (1, 9, 10, 72)),  # Winograd, no padding (MTCNN's).
    pytest.param(layers.Conv(8, 3, 2, 1, use_bias=False), (3, 2, 1, 1), (2, 13, 13, 16),  # Stride 2: plain.
                 marks=pytest.mark.slow),
    pytest.param(layers.Conv(8, 5, 1, 2), (5, 1, 2, 1), (1, 10, 9, 4), marks=pytest.mark.slow),  # 5x5, not square.
    (layers.Conv(8, 3, 1, 1), (3, 1, 1, 1), (1, 6, 6, 32)),  # Under WINOGRAD_MIN_CHANNELS: plain.
    (layers.PointwiseConv(16, 2), (1, 2, 0, 1), (2, 15, 15, 8)),
    (layers.Conv(8, 3, 2, 1, use_bias=False), (3, 2, 1, 1), (2, 20, 20, 3)),
    pytest.param(layers.Conv(8, 7, 2, 3, use_bias=False), (7, 2, 3, 1), (2, 20, 20, 3), marks=pytest.mark.slow),
    (layers.DepthwiseConv(3, 2, 1), (3, 2, 1, 8), (2, 21, 21, 8)),
    (layers.DepthwiseConv(3, 1, 1), (3, 1, 1, 8), (3, 10, 9, 8)),  # SFace's stride 1; odd columns.
    (layers.DepthwiseConv(3, 2, 1), (3, 2, 1, 16), (2, 14, 14, 16)),  # Stride 2 on even sizes: dx's last row.
    pytest.param(layers.DepthwiseConv(5, 2, 0), (5, 2, 0, 4), (1, 12, 11, 4), marks=pytest.mark.slow),
]


def _plain(x, kernel, bias, k, s, p, groups):
  y = jax.lax.conv_general_dilated(x, kernel, (s, s), layers.pad(p), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=groups)
  return y if bias is None else y + bias


def _close(got, want, name, tol=1e-5):
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(jnp.abs(want).max()), err_msg=name)


@pytest.mark.parametrize("module,plain,shape", CASES, ids=lambda c: type(c).__name__ if isinstance(c, nn.Module)
                         else None)
def test_cpu_forms_equal_the_plain_convolution_values_and_gradients(module, plain, shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  v = module.init(jax.random.PRNGKey(0), x)
  leaves = v["params"]
  assert set(leaves) <= {"kernel", "bias"} and leaves["kernel"].shape[:2] == (plain[0], plain[0])
  y = module.apply(v, x)
  g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)  # A random cotangent: every output counts.
  ours = cpu.jit(jax.grad(lambda v, x: (module.apply(v, x) * g).sum(), (0, 1)))(v, x)
  ref_y = _plain(x, leaves["kernel"], leaves.get("bias"), *plain)
  ref = jax.jit(jax.grad(lambda p, x: (_plain(x, p["kernel"], p.get("bias"), *plain) * g).sum(), (0, 1)))(leaves, x)
  _close(y, ref_y, "output")
  for name, got, want in (("d input", ours[1], ref[1]),
                          *((f"d {k}", ours[0]["params"][k], ref[0][k]) for k in leaves)):
    _close(got, want, name)


def test_winograd_equals_the_convolution_at_model_sizes():
  """Values and both gradients at a ResNet stage's shape (several tiles, one odd side), 1e-5 of the largest."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 29, 28, 32)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 32, 48)) / np.sqrt(9 * 32), jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 29, 28, 48)), jnp.float32)
  ours = jax.jit(jax.value_and_grad(lambda x, w: (winograd.conv3x3(x, w, 1) * g).sum(), (0, 1)))(x, w)
  ref = jax.jit(jax.value_and_grad(lambda x, w: (_plain(x, w, None, 3, 1, 1, 1) * g).sum(), (0, 1)))(x, w)
  _close(winograd.conv3x3(x, w, 1), _plain(x, w, None, 3, 1, 1, 1), "output")
  _close(ours[1][0], ref[1][0], "d input")
  _close(ours[1][1], ref[1][1], "d kernel")


def test_conv_has_nn_conv_parameters_and_the_switch_gives_the_plain_convolution(monkeypatch):
  x = jnp.ones((1, 8, 8, 64))
  ours = layers.Conv(8, 3, 1, 1).init(jax.random.PRNGKey(3), x)
  flax_conv = nn.Conv(8, (3, 3), 1, layers.pad(1)).init(jax.random.PRNGKey(3), x)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_conv)
  np.testing.assert_array_equal(ours["params"]["kernel"], flax_conv["params"]["kernel"])  # Same initialiser.

  def convolutions():  # In the weight gradient's program: the output and the weight gradient, or none (Winograd).
    def fn(v, x):
      return (layers.Conv(8, 3, 1, 1).apply(v, x) ** 2).sum()
    return str(jax.make_jaxpr(jax.grad(fn))(ours, x)).count("conv_general_dilated[")
  assert convolutions() == 0
  assert cpu.compiler_options() == cpu.COMPILER_OPTIONS
  monkeypatch.setenv("JFACEDIAG_CPU_LAYERS", "0")
  assert convolutions() == 2 and cpu.compiler_options() is None


@pytest.mark.parametrize("shape", [(4, 5, 6, 8), (6, 8)])
def test_batch_norm_equals_flax_batch_norm_in_training(shape, monkeypatch):
  """Outputs, running statistics and the gradients of input, scale and bias (through a random cotangent)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=shape) * 3 + 1, jnp.float32)
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ours = layers.torch_batch_norm(True, 1e-3)()
  v = ours.init(jax.random.PRNGKey(0), x)
  v = {"params": jax.tree.map(lambda a: a + jnp.asarray(rng.normal(size=a.shape), jnp.float32), v["params"]),
       "batch_stats": v["batch_stats"]}

  def run(module):
    def loss(params, x):
      y, upd = module.apply({"params": params, "batch_stats": v["batch_stats"]}, x, mutable=["batch_stats"])
      return (y * g).sum(), (y, upd["batch_stats"])
    return jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(v["params"], x)

  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3, use_fast_variance=False)
  (_, (y, stats)), (d_params, dx) = run(ours)
  (_, (ref_y, ref_stats)), (ref_params, ref_dx) = run(flax_bn)
  assert "batch_norm_train" in str(jax.make_jaxpr(lambda x: ours.apply(v, x, mutable=["batch_stats"]))(x))
  _close(y, ref_y, "output")
  _close(dx, ref_dx, "d input", 2e-5)
  for k in ("mean", "var"):
    _close(stats[k], ref_stats[k], k)
  for k in ("scale", "bias"):
    _close(d_params[k], ref_params[k], f"d {k}")
  eval_bn = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-3, use_fast_variance=False)
  _close(layers.torch_batch_norm(False, 1e-3)().apply(v, x), eval_bn.apply(v, x), "eval")
  monkeypatch.setenv("JFACEDIAG_CPU_LAYERS", "0")
  assert "batch_norm_train" not in str(jax.make_jaxpr(lambda x: ours.apply(v, x, mutable=["batch_stats"]))(x))


@pytest.mark.parametrize("k,s,p,ceil_mode,size", [(3, 2, 1, False, 12), (2, 2, 0, True, 9), (3, 2, 0, True, 10),
                                                   (3, 2, 0, False, 10)])
def test_max_pool_equals_torch_values_and_gradient_with_ties(k, s, p, ceil_mode, size):
  """After a ReLU most windows hold ties: the gradient goes to each window's first maximum, as torch's does."""
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  x = np.maximum(rng.normal(size=(2, size, size + 1, 5)), 0).astype(np.float32)
  x[0, :4, :4] = 0.0  # Whole windows of equal values.
  g_shape = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size + 1), k, s, p, ceil_mode=ceil_mode).shape
  g = rng.normal(size=(2, g_shape[2], g_shape[3], 5)).astype(np.float32)
  y, dx = jax.jit(jax.value_and_grad(lambda x: (layers.max_pool(x, k, s, p, ceil_mode) * g).sum()))(jnp.asarray(x))
  tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
  ty = torch.nn.functional.max_pool2d(tx, k, s, p, ceil_mode=ceil_mode)
  loss = (ty * torch.from_numpy(g.transpose(0, 3, 1, 2).copy())).sum()
  loss.backward()
  np.testing.assert_allclose(y, loss.item(), rtol=1e-5)
  # Overlapping windows add into one input in another order: equal to float rounding. A gradient sent to another
  # element of a tie would differ by a whole cotangent.
  _close(dx, tx.grad.numpy().transpose(0, 2, 3, 1), "d input", 1e-6)
  values = layers.max_pool(jnp.asarray(x), k, s, p, ceil_mode)
  np.testing.assert_array_equal(np.asarray(values), ty.detach().numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("shape,masked", [((1, 16, 20, 3), True), ((2, 15, 13, 3), False), ((1, 13, 18, 3), True)])
def test_pnet_conv_prelu_pool_equals_the_plain_layers(shape, masked, monkeypatch):
  """MTCNN PNet's CPU form of conv1 -> PReLU -> mask -> ceil-mode pool (one 4x4 stride-2 conv) against the plain
  layers, on even and odd sides, with a canvas mask that leaves whole pooling windows empty: the whole PNet's
  outputs, and which pooled cells are empty (-inf) before PNet zeroes them."""
  from jfacediag.models import mtcnn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  valid = jnp.asarray(rng.random((shape[1] - 2, shape[2] - 2)) > 0.3) if masked else None
  if masked:
    valid = valid.at[:4, :4].set(False)  # Whole empty windows.
  v = mtcnn.PNet().init(jax.random.PRNGKey(0), x, valid)
  v = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(size=a.shape) * 0.3, jnp.float32), v)  # Slopes != 0.25.
  p = v["params"]
  ours = mtcnn.conv_prelu_pool(x, p["conv1"]["kernel"], p["conv1"]["bias"], p["prelu1"]["weight"], valid)
  fast = mtcnn.PNet().apply(v, x, valid)
  monkeypatch.setenv("JFACEDIAG_CPU_LAYERS", "0")
  plain = mtcnn.PNet().apply(v, x, valid)
  y = layers.PReLU().apply({"params": p["prelu1"]}, _plain(x, p["conv1"]["kernel"], p["conv1"]["bias"], 3, 1, 0, 1))
  if masked:
    y = jnp.where(valid[None, :, :, None], y, -jnp.inf)
  want = layers.max_pool(y, 2, 2, ceil_mode=True)
  assert ours.shape == want.shape
  np.testing.assert_array_equal(jnp.isfinite(ours), jnp.isfinite(want))
  assert not jnp.isfinite(want).all() if masked else jnp.isfinite(want).all()
  _close(jnp.where(jnp.isfinite(want), ours, 0), jnp.where(jnp.isfinite(want), want, 0), "conv1 to pool1")
  for name, got, ref in zip(("box", "prob"), fast, plain):
    _close(got, ref, name)


def test_huge_pages_stay_off_where_an_accelerator_runs_the_steps(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert cpu.accelerator_visible()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert not cpu.accelerator_visible()
  assert cpu.entry_point_argv() is None  # pytest is not `python -m jfacediag.*`: no restart with huge pages.


_FAULTS = """
import os, resource
import jfacediag, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sort(x * 2)[::1024].sum())  # 8 MB temporaries, freed at the end of each call.
x = jnp.ones((2 * 1024 * 1024,))
for _ in range(3): f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10): f(x).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, jfacediag.cpu.describe().split()[0])
"""


_HUGE = cpu._huge_pages_possible()  # pylint: disable=protected-access


@pytest.mark.skipif(not _HUGE, reason="needs glibc >= 2.35 and transparent huge pages")
def test_huge_pages_spare_each_step_its_page_faults():
  """XLA:CPU frees a step's temporaries at its end: glibc's defaults fault them in again each call, 4 KiB at a time."""
  def faults(tunables):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update({"JAX_PLATFORMS": "cpu", **({"GLIBC_TUNABLES": tunables} if tunables else {})})
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, memory = out.stdout.split()
    return int(n), memory
  huge, memory = faults(cpu.HUGE_PAGES)
  default, default_memory = faults("")
  print(f"minor page faults over 10 calls: {huge} with huge pages, {default} with glibc's defaults")
  assert memory == "huge" and default_memory == "glibc's"
  assert default > 20000 and huge < default / 4  # Measured: 170-7,330 against 84,000-86,000.
