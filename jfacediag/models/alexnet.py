"""AlexNet as torchvision's ImageNet `alexnet` (the paper's smallest backbone in Tables 3-5).

conv1 11x11/4 (64) - pool - conv2 5x5 (192) - pool - conv3..5 3x3 (384, 256, 256) - pool - adaptive avg pool 6x6 -
fc6 - fc7. `__call__` returns fc7 after its ReLU (4096-d). The converter maps torchvision's `features.N` /
`classifier.N` onto these names; fc6 reads an NCHW flatten of 256x6x6 in torch (permuted once by the converter).
torchvision's AlexNet is the one-tower variant (64/192 filters, no LRN); the paper's MatConvNet AlexNet is Caffe's
two-tower one (96/256, grouped convs), 723 M multiply-adds against 714 M here.
"""
import flax.linen as nn

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import IMAGENET


class AlexNet(nn.Module):
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(layers.Conv(64, 11, 4, 2, name="conv1")(x))
    x = layers.max_pool(x, 3, 2)
    x = nn.relu(layers.Conv(192, 5, 1, 2, name="conv2")(x))
    x = layers.max_pool(x, 3, 2)
    x = nn.relu(layers.Conv(384, 3, 1, 1, name="conv3")(x))
    x = nn.relu(layers.Conv(256, 3, 1, 1, name="conv4")(x))
    x = nn.relu(layers.Conv(256, 3, 1, 1, name="conv5")(x))
    x = layers.max_pool(x, 3, 2)
    x = layers.adaptive_avg_pool(x, 6)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.relu(nn.Dense(4096, name="fc6")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.relu(nn.Dense(4096, name="fc7")(x))


# torchvision's names: features.N (convs), classifier.N (fc6, fc7; classifier.6 is the ImageNet classifier).
RENAME = tuple((rf"^conv{i + 1}$", f"features.{n}") for i, n in enumerate((0, 3, 6, 8, 10))) + (
    (r"^fc6$", "classifier.1"), (r"^fc7$", "classifier.4"))
BACKBONES = (
    Backbone("alexnet", AlexNet, IMAGENET, 4096, "fc7 after ReLU (4096)", "paper", "conv5",
             torch_ref=reference("TorchvisionAlexNet", 1000), rename=RENAME, nchw={"fc6": (256, 6, 6)},
             head="classifier.6", verify_size=112, classes=(1000,),
             note="torchvision ImageNet alexnet (alexnet-owt-7be5be79.pth)"),
)
