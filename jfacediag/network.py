"""The network of a run: the registry backbone (or an ensemble of them) under a fresh head, with converted weights
(init.checkpoint) merged into the backbone, and the preprocessing its weights expect.

  net = network.build(config, ds.classes, ds.root)   # net.spec, net.pp, net.model, net.variables
"""
import dataclasses

import flax

from jfacediag import builtin, models, progress, steps
from jfacediag.data import aligned_folder
from jfacediag.models import classifier, ensemble, weights


@dataclasses.dataclass
class Network:
  spec: object  # models.Backbone, or an ensemble's spec.
  pp: object  # models.preprocessing.Preprocessing at the run's input size.
  model: classifier.Classifier
  variables: dict  # {"params", "batch_stats"}, loaded weights merged in.


def build(config, classes, root):
  """Registry backbone + fresh head; converted weights (init.checkpoint) merged into the backbone. An ensemble
  (model.backbone="ensemble") takes one weights directory per member, comma-separated in init.checkpoint."""
  names = [c.strip() for c in config.init.checkpoint.split(",") if c.strip()]
  loaded = [(name, *weights.load(builtin.resolve(name))) for name in names]
  if config.model.backbone == ensemble.NAME:
    spec = ensemble.make_spec([(meta["arch"], mpp) for _, _, meta, mpp in loaded], config.model.ensemble_combine,
                              config.model.input_size)
    pp, members = spec.preprocessing, [f"members_{k}" for k in range(len(loaded))]
  else:
    if len(loaded) > 1:
      raise ValueError(f"init.checkpoint names {len(loaded)} weights; several need model.backbone='ensemble'")
    spec = models.get(config.model.backbone)
    pp, members = (loaded[0][3] if loaded else spec.preprocessing), [""]
    if loaded and loaded[0][2]["arch"] != spec.name:
      raise ValueError(f"init.checkpoint holds {loaded[0][2]['arch']!r} weights but model.backbone={spec.name!r}")
  pp = pp.at_size(config.model.input_size)
  aligned = aligned_folder.settings(root)
  if aligned:  # jfacediag.align wrote the network's crop: feed it whole, never crop it a second time.
    pp = pp.for_crops()
  model = classifier.Classifier(spec.make(), len(classes), config.model.head_dropout)
  variables = flax.core.unfreeze(steps.init_variables(model, config.seed, pp.input_size))
  for member, (name, tree, meta, _) in zip(members, loaded):
    where = f"backbone/{member}" if member else "backbone"
    for col in ("params", "batch_stats"):
      if not variables[col]:  # No BatchNorm anywhere.
        continue
      parent, key = (variables[col]["backbone"], member) if member else (variables[col], "backbone")
      if key not in parent and not tree[col]:  # A member without BatchNorm.
        continue
      parent[key] = weights.merge(parent[key], tree[col], config.init.dont_load, f"{where} {col}")
    progress.log(f"Loaded {where} weights from {name} ({meta.get('source', 'unknown source')}).")
  progress.log(f"Input {pp.input_size}x{pp.input_size} {pp.channel_order}, mean {pp.mean}, std {pp.std}"
               + (f"; {root} holds {aligned['style']} crops, fed whole." if aligned else
                  f"; shorter side resized to {pp.resize_size}, centre {pp.input_size}."))
  warn_alignment(root, spec)
  return Network(spec, pp, model, variables)


def warn_alignment(root, spec):
  """Warns when the data were aligned (jfacediag.align) in another style than the backbone was trained on."""
  aligned = aligned_folder.settings(root)
  if not aligned or not spec.align_style:
    return
  style = aligned["style"]
  if style != spec.align_style:
    progress.log(f"WARNING: {root} was aligned with style {style!r}, but {spec.name} was trained on "
                 f"{spec.align_style!r} crops; face-recognition features transfer best from their own alignment "
                 f"(python -m jfacediag.align --style {spec.align_style}).")
