"""How a backbone wants its pixels: stored with the model (registry default, or the converted weights' metadata)."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Resize the shorter side to `resize_size`, centre-crop `input_size`, reorder channels, `(x - mean) / std`.

  `resize_size` > `input_size` is the upstream's evaluation crop of unaligned photos (VGGFace2, ImageNet: 256 ->
  224); aligned folders are fed with `for_crops()`.

  mean and std are in 0-255 pixel units and in `channel_order` order (BGR models list the BGR means).
  """
  input_size: int
  resize_size: int
  channel_order: str = "RGB"
  mean: tuple = (0.0, 0.0, 0.0)
  std: tuple = (1.0, 1.0, 1.0)

  def __post_init__(self):
    if self.channel_order not in ("RGB", "BGR"):
      raise ValueError(f"channel_order={self.channel_order!r}; expected 'RGB' or 'BGR'")
    if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
      raise ValueError(f"mean={self.mean} and std={self.std} need 3 values each, std > 0")
    if self.resize_size < self.input_size:
      raise ValueError(f"resize_size={self.resize_size} < input_size={self.input_size}")

  def at_size(self, input_size):
    """The same preprocessing for another input side, keeping the resize/crop ratio (256/224 stays 8/7)."""
    if not input_size or input_size == self.input_size:
      return self
    resize = round(input_size * self.resize_size / self.input_size)
    return dataclasses.replace(self, input_size=input_size, resize_size=resize)

  def for_crops(self):
    """The same preprocessing for crops that already are the network's input (jfacediag.align's output): the whole
    crop is resized to input_size, nothing is cropped away (a 224 px VGGFace2 crop is not resized to 256 and
    centre-cropped a second time)."""
    return dataclasses.replace(self, resize_size=self.input_size)

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d):
    d = dict(d)
    d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
    return cls(**d)


IMAGENET = Preprocessing(224, 256, "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
