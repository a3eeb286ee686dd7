"""What jfacediag knows about one network: the `Backbone` record each model file exports in `BACKBONES`.

One record holds the Flax module, the pixels it wants, its feature and Grad-CAM layers, the alignment style it was
trained on, its verification threshold, and how the converter maps upstream PyTorch key names onto it. The registry
(`jfacediag.models`) only collects the records; nothing else keeps a per-network table.
"""
import dataclasses
import importlib
import re
from collections.abc import Callable

from jfacediag.models.preprocessing import Preprocessing


class UnknownName(KeyError, ValueError):
  """An unknown backbone or weights name: a user's mistake (ValueError, one line on the command line) that is also
  the KeyError a registry lookup raises."""

  def __str__(self):
    return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A network and its facts.

  A backbone module maps an NHWC float32 batch to the feature layer, the layer before the last fully connected one
  (`__call__(x, train)`); `kind="mtcnn"` nets return upstream's tuple of outputs and are no classifier backbone.
  """
  name: str
  make: Callable  # () -> weight-free Flax module
  preprocessing: Preprocessing
  feature_dim: int
  feature_layer: str  # Human-readable: which layer the features are.
  align_style: str = ""  # The jfacediag.align style the backbone was trained on ("" = none in particular).
  cam_layer: str = ""  # The last convolutional block (module path inside the backbone), for Grad-CAM.
  members: tuple = ()  # An ensemble's (arch, Preprocessing) per member (models/ensemble.py); () for one network.
  # Cosine at which the embedder's authors call two adult faces the same person (None = they publish none).
  verification_threshold: float | None = None
  # == Conversion (jfacediag.convert) ==
  torch_ref: Callable | None = None  # (num_classes) -> PyTorch reference module; `reference(...)` builds one.
  rename: tuple = ()  # (regex, replacement) on the "/"-joined Flax module path, before "/" -> ".".
  nchw: dict = dataclasses.field(default_factory=dict)  # Flax Dense path -> (C, H, W) of the torch flatten.
  head: str = ""  # Torch prefix of the upstream classifier on the features ("" = none).
  src_rename: tuple = ()  # (regex, replacement) on source keys, for ports with other names.
  verify_size: int = 0  # Input side for --verify (0 = preprocessing.input_size).
  kind: str = "backbone"  # "backbone", "mtcnn" (returns upstream's tuple of outputs) or "onnx" (ONNX source only).
  classes: tuple = ()  # Upstream classifier sizes of the published weights (a mismatch hints at the wrong variant).
  note: str = ""  # What to convert: the upstream release.
  # Source namings whose upstream feeds other pixels than `preprocessing`: (label, regex any source key matches,
  # Preprocessing), checked against each upstream's own demo; the first match wins.
  namings: tuple = ()

  @property
  def convertible(self):
    return self.torch_ref is not None or self.kind == "onnx"

  def source_preprocessing(self, keys):
    """(preprocessing, naming label) for a checkpoint with these source keys."""
    for label, rx, pp in self.namings:
      if any(re.search(rx, k) for k in keys):
        return pp, label
    return self.preprocessing, ""

  def torch_name(self, flax_path):
    for rx, rep in self.rename:
      flax_path = re.sub(rx, rep, flax_path)
    return flax_path.replace("/", ".")


def reference(cls_name, num_classes=None, **kwargs):
  """A `torch_ref`: called with n (or None), builds jfacediag.reference.torch_models.<cls_name>(**kwargs,
  num_classes=n or `num_classes`; none if both are None). torch is imported only by --verify and the tests."""
  def make(n=None):
    torch_models = importlib.import_module("jfacediag.reference.torch_models")
    classes = n or num_classes
    return getattr(torch_models, cls_name)(**kwargs, **({"num_classes": classes} if classes else {}))
  return make
