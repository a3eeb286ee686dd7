"""VGG-16 (configuration D, no BatchNorm): torchvision's ImageNet `vgg16` and the VGG-Face network.

Module names follow the VGG-Face ports (`conv1_1` .. `conv5_3`, `fc6`, `fc7`); the converter maps torchvision's
`features.N` / `classifier.N` onto them. `__call__` returns fc7 after its ReLU (4096-d), the layer before fc8.
fc6 reads an NCHW flatten of 512x7x7 in torch; the converter permutes its kernel rows once so the model stays NHWC.
"""
import flax.linen as nn

from jfacediag.models import layers

BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(nn.Module):
  adaptive_pool: bool = True  # torchvision: AdaptiveAvgPool2d((7, 7)) before fc6 (identity at 224 input).
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False):
    for b, widths in enumerate(BLOCKS):
      for i, w in enumerate(widths):
        x = nn.relu(nn.Conv(w, (3, 3), 1, layers.pad(1), name=f"conv{b + 1}_{i + 1}")(x))
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
