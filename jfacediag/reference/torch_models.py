"""PyTorch reference modules with the upstream state_dict key names and shapes (each model file names its upstream),
for parity checks.

Written from the upstream definitions (torchvision, cydonia999/VGGFace2-pytorch, prlz77 and albanie VGG-Face
ports, insightface arcface_torch, facenet-pytorch, TreB1eN/InsightFace_Pytorch and Xiaoccer/MobileFaceNet_Pytorch);
no upstream code is imported. Backbones return
(features, logits): the feature layer that jfacediag's Flax module returns, and the upstream classifier on it
(None where the release has none). MTCNN nets return what upstream returns.

Needs torch (`pip install -e ".[dev]"`); only `--verify` and the tests import this module.
"""
import torch
from torch import nn
import torch.nn.functional as F


# == AlexNet ==========================================================================================================
class TorchvisionAlexNet(nn.Module):
  """torchvision.models.alexnet: `features.{0,3,6,8,10}`, `classifier.{1,4,6}`."""

  def __init__(self, num_classes=1000):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(True), nn.Dropout(),
                                    nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, num_classes))

  def forward(self, x):
    f = self.classifier[:6](torch.flatten(self.avgpool(self.features(x)), 1))
    return f, self.classifier[6](f)


# == VGG-16 ===========================================================================================================
_VGG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class TorchvisionVGG16(nn.Module):
  """torchvision.models.vgg16: `features.{0,2,...,28}`, `classifier.{0,3,6}`."""

  def __init__(self, num_classes=1000):
    super().__init__()
    mods, c = [], 3
    for v in _VGG_D:
      if v == "M":
        mods.append(nn.MaxPool2d(2, 2))
      else:
        mods += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
        c = v
    self.features = nn.Sequential(*mods)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                    nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))

  def forward(self, x):
    x = torch.flatten(self.avgpool(self.features(x)), 1)
    f = self.classifier[:5](x)
    return f, self.classifier[6](self.classifier[5](f))


class VGGFace(nn.Module):
  """VGG-Face as albanie's vgg_face_dag (`conv1_1` .. `conv5_3`, `fc6`, `fc7`, `fc8`), no adaptive pool.

  prlz77's port names the convs `conv_1_1` ..; the converter renames those keys.
  """

  def __init__(self, num_classes=2622):
    super().__init__()
    c = 3
    self.names = []
    for b, widths in enumerate(((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))):
      for i, w in enumerate(widths):
        name = f"conv{b + 1}_{i + 1}"
        setattr(self, name, nn.Conv2d(c, w, 3, padding=1))
        self.names.append(name)
        c = w
      self.names.append("pool")
    self.fc6, self.fc7, self.fc8 = nn.Linear(25088, 4096), nn.Linear(4096, 4096), nn.Linear(4096, num_classes)

  def forward(self, x):
    for name in self.names:
      x = F.max_pool2d(x, 2, 2) if name == "pool" else F.relu(getattr(self, name)(x))
    f = F.relu(self.fc7(F.relu(self.fc6(torch.flatten(x, 1)))))
    return f, self.fc8(f)


# == ResNet ===========================================================================================================
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
  """torchvision (stride on conv2) or Caffe-style VGGFace2 (stride on conv1); `se` adds conv4/conv5 (senet.py)."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, caffe=False, se=False):
    super().__init__()
    s1, s2 = (stride, 1) if caffe else (1, stride)
    self.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, s2, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample, self.se = downsample, se
    if se:
      self.conv4 = nn.Conv2d(planes * 4, planes * 4 // 16, 1)
      self.conv5 = nn.Conv2d(planes * 4 // 16, planes * 4, 1)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.se:
      w = F.avg_pool2d(out, kernel_size=out.size(2))
      out = torch.sigmoid(self.conv5(F.relu(self.conv4(w)))) * out
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
  """torchvision resnet18/34/50 (caffe=False) or VGGFace2 resnet50 / senet50 (caffe=True, se)."""

  def __init__(self, layers, block="bottleneck", num_classes=1000, caffe=False, se=False):
    super().__init__()
    blk = Bottleneck if block == "bottleneck" else BasicBlock
    self.caffe, self.inplanes = caffe, 64
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if caffe else nn.MaxPool2d(3, 2, 1)
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
      stride = 1 if i == 0 else 2
      down = None
      if stride != 1 or self.inplanes != planes * blk.expansion:
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes * blk.expansion, 1, stride, bias=False),
                             nn.BatchNorm2d(planes * blk.expansion))
      extra = {"caffe": caffe, "se": se} if blk is Bottleneck else {}
      mods = [blk(self.inplanes, planes, stride, down, **extra)]
      self.inplanes = planes * blk.expansion
      mods += [blk(self.inplanes, planes, **extra) for _ in range(1, n)]
      setattr(self, f"layer{i + 1}", nn.Sequential(*mods))
    self.pool = nn.AvgPool2d(7, stride=1) if caffe else nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(512 * blk.expansion, num_classes)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    f = torch.flatten(self.pool(x), 1)
    return f, self.fc(f)


# == iResNet ==========================================================================================================
class IBasicBlock(nn.Module):

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
  """insightface arcface_torch iresnet.py; the release holds no classifier (logits None)."""

  def __init__(self, layers, num_features=512):
    super().__init__()
    self.inplanes = 64
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
    self.prelu = nn.PReLU(64)
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
      down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
      mods = [IBasicBlock(self.inplanes, planes, 2, down)] + [IBasicBlock(planes, planes) for _ in range(1, n)]
      self.inplanes = planes
      setattr(self, f"layer{i + 1}", nn.Sequential(*mods))
    self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
    self.dropout = nn.Dropout(p=0.0)
    self.fc = nn.Linear(512 * 7 * 7, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-05)
    nn.init.constant_(self.features.weight, 1.0)
    self.features.weight.requires_grad = False

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.bn2(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
    return self.features(self.fc(self.dropout(torch.flatten(x, 1)))), None


# == InceptionResnetV1 ================================================================================================
class BasicConv2d(nn.Module):

  def __init__(self, inp, out, kernel_size, stride, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(inp, out, kernel_size, stride, padding, bias=False)
    self.bn = nn.BatchNorm2d(out, eps=0.001, momentum=0.1, affine=True)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _bc(*specs):
  return nn.Sequential(*[BasicConv2d(*s) for s in specs])


class Block35(nn.Module):

  def __init__(self, scale):
    super().__init__()
    self.scale = scale
    self.branch0 = BasicConv2d(256, 32, 1, 1)
    self.branch1 = _bc((256, 32, 1, 1), (32, 32, 3, 1, 1))
    self.branch2 = _bc((256, 32, 1, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1))
    self.conv2d = nn.Conv2d(96, 256, 1, 1)

  def forward(self, x):
    out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1))
    return F.relu(out * self.scale + x)


class Block17(nn.Module):

  def __init__(self, scale):
    super().__init__()
    self.scale = scale
    self.branch0 = BasicConv2d(896, 128, 1, 1)
    self.branch1 = _bc((896, 128, 1, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0)))
    self.conv2d = nn.Conv2d(256, 896, 1, 1)

  def forward(self, x):
    return F.relu(self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1)) * self.scale + x)


class Block8(nn.Module):

  def __init__(self, scale=1.0, no_relu=False):
    super().__init__()
    self.scale, self.no_relu = scale, no_relu
    self.branch0 = BasicConv2d(1792, 192, 1, 1)
    self.branch1 = _bc((1792, 192, 1, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0)))
    self.conv2d = nn.Conv2d(384, 1792, 1, 1)

  def forward(self, x):
    out = self.conv2d(torch.cat((self.branch0(x), self.branch1(x)), 1)) * self.scale + x
    return out if self.no_relu else F.relu(out)


class Mixed6a(nn.Module):

  def __init__(self):
    super().__init__()
    self.branch0 = BasicConv2d(256, 384, 3, 2)
    self.branch1 = _bc((256, 192, 1, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))
    self.branch2 = nn.MaxPool2d(3, stride=2)

  def forward(self, x):
    return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed7a(nn.Module):

  def __init__(self):
    super().__init__()
    self.branch0 = _bc((896, 256, 1, 1), (256, 384, 3, 2))
    self.branch1 = _bc((896, 256, 1, 1), (256, 256, 3, 2))
    self.branch2 = _bc((896, 256, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2))
    self.branch3 = nn.MaxPool2d(3, stride=2)

  def forward(self, x):
    return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class InceptionResnetV1(nn.Module):
  """facenet-pytorch; features = last_bn output (before L2 normalisation), logits = the `logits` layer on it."""

  def __init__(self, num_classes=8631):
    super().__init__()
    self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
    self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
    self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
    self.maxpool_3a = nn.MaxPool2d(3, stride=2)
    self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
    self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
    self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
    self.repeat_1 = nn.Sequential(*[Block35(0.17) for _ in range(5)])
    self.mixed_6a = Mixed6a()
    self.repeat_2 = nn.Sequential(*[Block17(0.10) for _ in range(10)])
    self.mixed_7a = Mixed7a()
    self.repeat_3 = nn.Sequential(*[Block8(0.20) for _ in range(5)])
    self.block8 = Block8(no_relu=True)
    self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
    self.dropout = nn.Dropout(0.6)
    self.last_linear = nn.Linear(1792, 512, bias=False)
    self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1, affine=True)
    self.logits = nn.Linear(512, num_classes)

  def forward(self, x):
    for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                 "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a", "dropout"):
      x = getattr(self, name)(x)
    f = self.last_bn(self.last_linear(x.view(x.shape[0], -1)))
    return f, self.logits(f)


# == MobileFaceNet ====================================================================================================
class _TConvBlock(nn.Module):  # TreB1eN Conv_block (prelu=True) / Linear_block (prelu=False).

  def __init__(self, in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1, prelu=True):
    super().__init__()
    self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
    self.bn = nn.BatchNorm2d(out_c)
    if prelu:
      self.prelu = nn.PReLU(out_c)

  def forward(self, x):
    x = self.bn(self.conv(x))
    return self.prelu(x) if hasattr(self, "prelu") else x


class _TDepthWise(nn.Module):  # TreB1eN Depth_Wise.

  def __init__(self, in_c, out_c, residual=False, stride=(2, 2), groups=1):
    super().__init__()
    self.conv = _TConvBlock(in_c, groups)
    self.conv_dw = _TConvBlock(groups, groups, (3, 3), stride, (1, 1), groups=groups)
    self.project = _TConvBlock(groups, out_c, prelu=False)
    self.residual = residual

  def forward(self, x):
    out = self.project(self.conv_dw(self.conv(x)))
    return x + out if self.residual else out


class _TResidual(nn.Module):  # TreB1eN Residual.

  def __init__(self, c, num_block, groups):
    super().__init__()
    self.model = nn.Sequential(*[_TDepthWise(c, c, True, (1, 1), groups) for _ in range(num_block)])

  def forward(self, x):
    return self.model(x)


class TreB1eNMobileFaceNet(nn.Module):
  """TreB1eN/InsightFace_Pytorch model.py MobileFaceNet(embedding_size); returns the BatchNorm1d output before
  upstream's l2_norm (the layer jfacediag's module returns) and no classifier."""

  def __init__(self, embedding_size=512):
    super().__init__()
    self.conv1 = _TConvBlock(3, 64, (3, 3), (2, 2), (1, 1))
    self.conv2_dw = _TConvBlock(64, 64, (3, 3), (1, 1), (1, 1), groups=64)
    self.conv_23 = _TDepthWise(64, 64, groups=128)
    self.conv_3 = _TResidual(64, 4, 128)
    self.conv_34 = _TDepthWise(64, 128, groups=256)
    self.conv_4 = _TResidual(128, 6, 256)
    self.conv_45 = _TDepthWise(128, 128, groups=512)
    self.conv_5 = _TResidual(128, 2, 256)
    self.conv_6_sep = _TConvBlock(128, 512)
    self.conv_6_dw = _TConvBlock(512, 512, (7, 7), groups=512, prelu=False)
    self.linear = nn.Linear(512, embedding_size, bias=False)
    self.bn = nn.BatchNorm1d(embedding_size)

  def forward(self, x):
    for name in ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5", "conv_6_sep",
                 "conv_6_dw"):
      x = getattr(self, name)(x)
    return self.bn(self.linear(x.view(x.size(0), -1))), None


class _XConvBlock(nn.Module):  # Xiaoccer ConvBlock.

  def __init__(self, inp, oup, k, s, p, dw=False, linear=False):
    super().__init__()
    self.linear = linear
    self.conv = nn.Conv2d(inp, oup, k, s, p, groups=inp if dw else 1, bias=False)
    self.bn = nn.BatchNorm2d(oup)
    if not linear:
      self.prelu = nn.PReLU(oup)

  def forward(self, x):
    x = self.bn(self.conv(x))
    return x if self.linear else self.prelu(x)


class _XBottleneck(nn.Module):  # Xiaoccer Bottleneck.

  def __init__(self, inp, oup, stride, expansion):
    super().__init__()
    self.connect = stride == 1 and inp == oup
    e = inp * expansion
    self.conv = nn.Sequential(nn.Conv2d(inp, e, 1, 1, 0, bias=False), nn.BatchNorm2d(e), nn.PReLU(e),
                              nn.Conv2d(e, e, 3, stride, 1, groups=e, bias=False), nn.BatchNorm2d(e), nn.PReLU(e),
                              nn.Conv2d(e, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

  def forward(self, x):
    return x + self.conv(x) if self.connect else self.conv(x)


class XiaoccerMobileFacenet(nn.Module):
  """Xiaoccer/MobileFaceNet_Pytorch core/model.py MobileFacenet (112x96 input, 128-d). A 112x112 batch is cut to
  its central 96 columns first, as jfacediag's module does (models/mobilefacenet.py: that is the 112x96 crop)."""

  def __init__(self):
    super().__init__()
    self.conv1 = _XConvBlock(3, 64, 3, 2, 1)
    self.dw_conv1 = _XConvBlock(64, 64, 3, 1, 1, dw=True)
    blocks, inplanes = [], 64
    for t, c, n, s in ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)):
      for i in range(n):
        blocks.append(_XBottleneck(inplanes, c, s if i == 0 else 1, t))
        inplanes = c
    self.blocks = nn.Sequential(*blocks)
    self.conv2 = _XConvBlock(128, 512, 1, 1, 0)
    self.linear7 = _XConvBlock(512, 512, (7, 6), 1, 0, dw=True, linear=True)
    self.linear1 = _XConvBlock(512, 128, 1, 1, 0, linear=True)

  def forward(self, x):
    if x.shape[-1] == 112:
      x = x[..., 8:104]
    x = self.linear1(self.linear7(self.conv2(self.blocks(self.dw_conv1(self.conv1(x))))))
    return x.view(x.size(0), -1), None


# == SFace ============================================================================================================
class SFace(nn.Module):
  """OpenCV zoo SFace (an MXNet export, converted from ONNX): no upstream PyTorch code exists, so the keys are
  jfacediag's Flax module paths. For `jfacediag.bench` and a parity test of the architecture."""

  def __init__(self):
    super().__init__()
    from jfacediag.models import sface  # pylint: disable=g-import-not-at-top

    def block(name, c_in, c_out, k, stride, groups=1, eps=1e-3):
      setattr(self, f"{name}_conv2d", nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False))
      setattr(self, f"{name}_batchnorm", nn.BatchNorm2d(c_out, eps=eps))
      setattr(self, f"{name}_relu", nn.PReLU(c_out))
      return name

    self.names = [block("conv_1", 3, 32, 3, 1)]
    c = 32
    for i, (ch, stride) in enumerate(sface.STAGES):
      self.names.append(block(f"conv_{i + 2}_dw", c, c, 3, stride, groups=c))
      self.names.append(block(f"conv_{i + 2}", c, ch, 1, 1))
      c = ch
    self.bn1 = nn.BatchNorm2d(c, eps=2e-5)
    self.pre_fc1 = nn.Linear(c * 7 * 7, 128)
    self.fc1 = nn.BatchNorm1d(128, eps=2e-5)

  def forward(self, x):
    for name in self.names:
      x = getattr(self, f"{name}_relu")(getattr(self, f"{name}_batchnorm")(getattr(self, f"{name}_conv2d")(x)))
    x = self.pre_fc1(torch.flatten(self.bn1(x), 1))
    return self.fc1(x), None


# == MTCNN ============================================================================================================
class PNet(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
    self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
    self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
    self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
    self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

  def forward(self, x):
    x = self.pool1(self.prelu1(self.conv1(x)))
    x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
    return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
    self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
    self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
    self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
    self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
    self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
    self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

  def forward(self, x):
    x = self.pool1(self.prelu1(self.conv1(x)))
    x = self.pool2(self.prelu2(self.conv2(x)))
    x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
    x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
    return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
    self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
    self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
    self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
    self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
    self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
    self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
    self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
    self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

  def forward(self, x):
    x = self.pool1(self.prelu1(self.conv1(x)))
    x = self.pool2(self.prelu2(self.conv2(x)))
    x = self.pool3(self.prelu3(self.conv3(x)))
    x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
    x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
    return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)
