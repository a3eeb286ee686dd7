"""Several converted backbones as one: `config.model.backbone = "ensemble"` with comma-separated `init.checkpoint`.

  python -m jfacediag.train --config configs/demo.py:method=svm --config.model.backbone=ensemble \
      --config.init.checkpoint=builtin:sface,run:runs/demo/finetune

The members share one aligned crop (so they must share an alignment style) and receive it as 0-255 RGB pixels;
each member applies its own preprocessing (channel order, mean, std; a resize when its input side differs), and
its features are L2-normalised, then concatenated (`model.ensemble_combine = "concat"`, the default) or averaged
("mean", equal feature sizes only). DTL2 fits its SVM on that vector, as GestaltMatcher-Arc combines a
face-verification and a task-specific model; predict and Grad-CAM (on the first member's CAM layer) run on it
like on any backbone. Parameters live under backbone/members_<k>, one converted weights directory each.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jfacediag import models
from jfacediag.models.preprocessing import Preprocessing

NAME = "ensemble"
COMBINE = ("concat", "mean")


class Ensemble(nn.Module):
  """members[k] on ((x in member k's channel order) - mean_k) / std_k, resized to side_k; features L2-normalised."""
  members: tuple
  preps: tuple  # Of (channel_order, mean, std, input side): one per member.
  combine: str = "concat"

  def __call__(self, x, train: bool = False):
    feats = []
    for member, (order, mean, std, side) in zip(self.members, self.preps):
      xi = x[..., ::-1] if order == "BGR" else x
      xi = (xi - jnp.asarray(mean, xi.dtype)) / jnp.asarray(std, xi.dtype)
      if xi.shape[1:3] != (side, side):
        xi = jax.image.resize(xi, (xi.shape[0], side, side, xi.shape[3]), "linear")
      f = member(xi, train=train)
      feats.append(f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12))
    return jnp.concatenate(feats, -1) if self.combine == "concat" else jnp.mean(jnp.stack(feats), 0)


def make_spec(members, combine="concat", input_size=0):
  """A models.Backbone for members [(arch name, Preprocessing)]: raw 0-255 RGB input at `input_size` (0 = the
  largest member side), the members' common alignment style, the first member's CAM layer."""
  if len(members) < 2:
    raise ValueError(f"model.backbone='{NAME}' needs at least 2 weights in init.checkpoint (comma-separated); got "
                     f"{len(members)}")
  if combine not in COMBINE:
    raise ValueError(f"model.ensemble_combine={combine!r}; expected one of {', '.join(COMBINE)}")
  specs = [models.get(arch) for arch, _ in members]
  if any(s.name == NAME for s in specs):
    raise ValueError("an ensemble cannot hold another ensemble")
  styles = {s.align_style for s in specs if s.align_style}
  if len(styles) > 1:
    raise ValueError("ensemble members want different alignments ("
                     + ", ".join(f"{s.name}: {s.align_style or 'any'}" for s in specs)
                     + "); one aligned folder feeds every member, so they must share a style")
  dims = [s.feature_dim for s in specs]
  if combine == "mean" and len(set(dims)) > 1:
    raise ValueError(f"model.ensemble_combine='mean' needs equal feature sizes; the members give {dims} "
                     "(use 'concat')")
  preps = tuple((pp.channel_order, tuple(pp.mean), tuple(pp.std), pp.input_size) for _, pp in members)
  side = input_size or max(pp.input_size for _, pp in members)
  name = f"{NAME}({'+'.join(s.name for s in specs)})"
  return models.Backbone(
      name, lambda: Ensemble(tuple(s.make() for s in specs), preps, combine),
      Preprocessing(side, side, "RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
      sum(dims) if combine == "concat" else dims[0],
      f"{combine} of the L2-normalised " + ", ".join(f"{s.name} {s.feature_layer}" for s in specs),
      next(iter(styles), ""), f"members_0/{specs[0].cam_layer}" if specs[0].cam_layer else "", tuple(members))


def from_facts(facts, combine="concat"):
  """The spec of a finished ensemble run, from its report's run facts (predict: no weights directory needed)."""
  return make_spec([(m["arch"], Preprocessing.from_dict(m["preprocessing"])) for m in facts["ensemble"]], combine,
                   facts["input_size"])


def facts(spec, checkpoints):
  """What from_facts reads back: per member its weights, arch and preprocessing."""
  return [{"weights": w, "arch": arch, "preprocessing": pp.to_dict()} for w, (arch, pp) in zip(checkpoints,
                                                                                                spec.members)]
