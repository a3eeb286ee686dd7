"""backbone + head: the network every method trains or evaluates."""
import flax.linen as nn


class Classifier(nn.Module):
  """`backbone` maps images to features; `head` is a fresh Dense layer on them (for DTL2 it holds the SVM)."""
  backbone: nn.Module
  num_classes: int
  head_dropout: float = 0.0

  def features(self, x, train: bool = False):
    return self.backbone(x, train=train)

  @nn.compact
  def __call__(self, x, train: bool = False, bn_train: bool | None = None):
    """train: dropout on; bn_train: BatchNorm uses and updates batch statistics (defaults to `train`)."""
    f = self.backbone(x, train=train if bn_train is None else bn_train)
    f = nn.Dropout(self.head_dropout, deterministic=not train or self.head_dropout == 0)(f)
    return nn.Dense(self.num_classes, name="head")(f)
