"""VGG-16 (configuration D, no BatchNorm): torchvision's ImageNet `vgg16` and the VGG-Face network.

Module names follow the VGG-Face ports (`conv1_1` .. `conv5_3`, `fc6`, `fc7`); the converter maps torchvision's
`features.N` / `classifier.N` onto them. `__call__` returns fc7 after its ReLU (4096-d), the layer before fc8.
fc6 reads an NCHW flatten of 512x7x7 in torch; the converter permutes its kernel rows once so the model stays NHWC.
"""
import flax.linen as nn

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import IMAGENET, Preprocessing

BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(nn.Module):
  adaptive_pool: bool = True  # torchvision: AdaptiveAvgPool2d((7, 7)) before fc6 (identity at 224 input).
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    for b, widths in enumerate(BLOCKS):
      for i, w in enumerate(widths):
        x = nn.relu(layers.Conv(w, 3, 1, 1, name=f"conv{b + 1}_{i + 1}")(x))
      x = layers.max_pool(x, 2, 2)
    if self.adaptive_pool:
      x = layers.adaptive_avg_pool(x, 7)
    if x.shape[1:3] != (7, 7):
      raise ValueError(f"VGG-16 without adaptive pooling needs a 224x224 input (fc6 reads 7x7x512); "
                       f"got a {x.shape[1]}x{x.shape[2]} map")
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(4096, name="fc6")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, name="fc7")(x))
    return x



def _torchvision_names():
  out, idx = [], 0
  for b, n in enumerate(len(w) for w in BLOCKS):
    for i in range(n):
      out.append((rf"^conv{b + 1}_{i + 1}$", f"features.{idx}"))
      idx += 2
    idx += 1  # The max pool.
  return tuple(out) + ((r"^fc6$", "classifier.0"), (r"^fc7$", "classifier.3"))


# VGG-Face: 0-255 RGB minus the MatConvNet mean (albanie's vgg_face_dag). prlz77's port of the Torch7 .t7 release
# takes BGR: its demo (models/vgg_face.py __main__) reads with cv2.imread and subtracts the same numbers in that order.
VGG_FACE = Preprocessing(224, 224, "RGB", (129.1863, 104.7624, 93.5940), (1.0, 1.0, 1.0))
VGG_FACE_PRLZ77 = Preprocessing(224, 224, "BGR", (129.1863, 104.7624, 93.5940), (1.0, 1.0, 1.0))
BACKBONES = (
    Backbone("vgg16", lambda: VGG16(adaptive_pool=True), IMAGENET, 4096, "fc7 after ReLU (4096)", "paper", "conv5_3",
             torch_ref=reference("TorchvisionVGG16", 1000), rename=_torchvision_names(), nchw={"fc6": (512, 7, 7)},
             head="classifier.6", verify_size=32, classes=(1000,),
             note="torchvision ImageNet vgg16 (vgg16-397923af.pth)"),
    # The ImageNet and VGG-Face backbones take the paper's own landmark alignment at 224 ("paper" style).
    Backbone("vgg_face", lambda: VGG16(adaptive_pool=False), VGG_FACE, 4096, "fc7 after ReLU (4096)", "paper",
             "conv5_3", torch_ref=reference("VGGFace", 2622), nchw={"fc6": (512, 7, 7)}, head="fc8", classes=(2622,),
             src_rename=((r"^conv_(\d)_(\d)\.", r"conv\1_\2."),),
             namings=(("albanie vgg_face_dag (MatConvNet)", r"^conv1_1\.", VGG_FACE),
                      ("prlz77 VGG_16 (Torch7 VGG_FACE.t7)", r"^conv_1_1\.", VGG_FACE_PRLZ77)),
             note="VGG-Face (Parkhi 2015), albanie vgg_face_dag.pth (RGB) or prlz77 VGG_16 port names (BGR)"),
)
