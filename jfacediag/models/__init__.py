"""The backbone registry: a name gives the Flax module, its preprocessing and its feature layer.

A backbone module maps an NHWC float32 batch to the feature layer, the layer before the last fully connected one
(`__call__(x, train)`). A new backbone is one module file plus one `register` call here.
"""
import dataclasses
from typing import Callable

from jfacediag.models import resnet
from jfacediag.models.preprocessing import IMAGENET, Preprocessing


@dataclasses.dataclass(frozen=True)
class Backbone:
  name: str
  make: Callable  # () -> flax module
  preprocessing: Preprocessing
  feature_dim: int
  feature_layer: str  # Human-readable: which layer the features are.


_REGISTRY = {}


def register(spec):
  if spec.name in _REGISTRY:
    raise ValueError(f"backbone {spec.name!r} is registered twice")
  _REGISTRY[spec.name] = spec


def names():
  return sorted(_REGISTRY)


def get(name):
  if name not in _REGISTRY:
    raise KeyError(f"Unknown backbone {name!r}; registered: {', '.join(names())}")
  return _REGISTRY[name]


def _resnet(name, stages, block, width=64):
  dim = width * 8 * (4 if block == "bottleneck" else 1)
  register(Backbone(name, lambda: resnet.ResNet(stages, block, width), IMAGENET, dim, f"global average pool ({dim})"))


_resnet("resnet18", (2, 2, 2, 2), "basic")
_resnet("resnet34", (3, 4, 6, 3), "basic")
_resnet("resnet50", (3, 4, 6, 3), "bottleneck")
# A ResNet-18 shape at 1/8 width and one block per stage: for tests and the toy run (about 0.2M parameters).
_resnet("resnet_tiny", (1, 1, 1, 1), "basic", width=8)
