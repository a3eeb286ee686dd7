"""The backbone registry: collects the `BACKBONES` records of the model files (models/backbone.py says what one
holds). Adding a backbone: its model file with a `BACKBONES` tuple, listed in `_MODEL_FILES`; its PyTorch reference
class in jfacediag/reference/torch_models.py; one parity test (README "Adding a backbone").
"""
from jfacediag.models import alexnet, inception_resnet_v1, iresnet, mobilefacenet, mtcnn, resnet, sface, vgg
from jfacediag.models.backbone import Backbone, UnknownName

_MODEL_FILES = (alexnet, vgg, resnet, iresnet, inception_resnet_v1, sface, mobilefacenet, mtcnn)
_REGISTRY = {}


def register(spec):
  if spec.name in _REGISTRY:
    raise ValueError(f"backbone {spec.name!r} is registered twice")
  _REGISTRY[spec.name] = spec


for _module in _MODEL_FILES:
  for _spec in _module.BACKBONES:
    register(_spec)


def names():
  """The classifier backbones (MTCNN's nets are registered for the converter, not for training)."""
  return sorted(n for n, s in _REGISTRY.items() if s.kind != "mtcnn")


def convertible():
  """{name: Backbone} of every network tools/convert_weights.py converts."""
  return {n: s for n, s in sorted(_REGISTRY.items()) if s.convertible}


def get(name):
  if name not in _REGISTRY:
    raise UnknownName(f"Unknown backbone {name!r}; registered: {', '.join(names())}")
  return _REGISTRY[name]


def verification_threshold(name):
  """The embedder authors' same-person cosine for a registered backbone, else None."""
  return _REGISTRY[name].verification_threshold if name in _REGISTRY else None


__all__ = ["Backbone", "UnknownName", "convertible", "get", "names", "register", "verification_threshold"]
