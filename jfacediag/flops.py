"""Forward-pass cost of a backbone + head, from the traced and the compiled graph, without running the model.

Two figures, because they count different things:
  macs       multiply-accumulates of the convolutions and matrix products in the traced forward (jaxpr), each
             output counted over its full kernel window: how the paper's tables (and ptflops, MatConvNet's
             vl_simplenn_display) count "FLOPs". VGG-16 15.47 G, ResNet-50 (original / Caffe layout) 3.86 G.
  xla_flops  XLA's cost analysis of the compiled forward (HloCostAnalysis): 2 per multiply-add, taps that fall on
             zero padding not counted, plus elementwise work (ReLU, BatchNorm, pooling). VGG-16 29.96 G = 2 x
             14.98 G: 3% below 2 x 15.47 G because a 3x3 window at a border of a 14x14 map is 2/3 padding.

The paper's ResNet-50 is the original layout (stride 2 on the first 1x1 of a block): resnet50_vggface2 and
senet50_vggface2 here, 3.86 / 3.87 G. torchvision's ResNet-50 (v1.5, stride on the 3x3) costs 4.09 G for the same
accuracy class; the paper's ImageNet rows ran MatConvNet's original-layout model.

  python -m jfacediag.flops --backbone vgg16 resnet50_vggface2 --size 224
"""
import argparse
import functools
import math
import sys

import jax
import jax.numpy as jnp

from jfacediag import cli_front, models
from jfacediag.models import classifier, layers


def _macs(jaxpr):
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features / groups, *spatial)
      total += math.prod(out.shape) * math.prod(rhs.shape[d] for d in spec[1:])
    elif name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
      total += math.prod(out.shape) * math.prod(lhs.shape[d] for d in contract)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(inner, "eqns"):
          total += _macs(inner)
  return total


@functools.cache
def forward_cost(backbone, size, num_classes=2):
  """{"macs", "xla_flops"} per image of backbone + a `num_classes` head at size x size (abstract shapes only)."""
  model = classifier.Classifier(models.get(backbone).make(), num_classes)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  with layers.as_convolutions():
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    macs = _macs(jax.make_jaxpr(fn)(variables, x).jaxpr)
    cost = jax.jit(fn).lower(variables, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax returned one dict per device program.
    cost = cost[0] if cost else {}
  return {"macs": int(macs), "xla_flops": float((cost or {}).get("flops", 0.0))}


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.flops", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--backbone", nargs="+", required=True)
  ap.add_argument("--size", type=int, default=0, help="input side (0 = the backbone's own)")
  ap.add_argument("--classes", type=int, default=2)
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def main(argv=None):
  args = parse(argv)
  print("| backbone | input | multiply-adds (paper's count) | XLA FLOPs (compiled) | XLA / (2 x MACs) |")
  print("|---|---|---|---|---|")
  for name in args.backbone:
    try:
      size = args.size or models.get(name).preprocessing.input_size
      c = forward_cost(name, size, args.classes)
    except (KeyError, ValueError) as e:
      print(f"error: {name}: {e}", file=sys.stderr)
      return 2
    print(f"| {name} | {size} | {c['macs'] / 1e9:.3f} G | {c['xla_flops'] / 1e9:.2f} G | "
          f"{c['xla_flops'] / (2 * c['macs']):.3f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
