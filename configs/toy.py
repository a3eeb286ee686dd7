"""Toy run: a generated 3-class image folder (shapes of different colour), a small ResNet from scratch.

Runs anywhere, with no data and no weights; the folder is generated into WORKDIR/data on first use.

  python -m jfacediag.train --config configs/toy.py --workdir runs/toy
  python -m jfacediag.train --config configs/toy.py:method=svm --workdir runs/toy-svm

Expected (2 CPU cores): finetune finishes in about a minute, test accuracy >= 0.95 on 60 test images;
svm (frozen random ResNet-18 features + LinearSVC, C by inner CV) finishes in under a minute, test accuracy >= 0.9.
Arguments (`:a=1,b=2`): method=finetune|svm, backbone=<registry name> (default resnet_tiny; resnet18 for svm).
"""
from jfacediag import base_config


def get_config(arg=None):
  arg = base_config.parse_arg(arg, method="finetune", backbone="")
  c = base_config.get_config()
  c.method = arg.method
  c.data.generate = "toy"
  c.data.split = "per_class"
  c.data.train_per_class = 40
  c.data.test_per_class = 20
  c.data.val_fraction = 0.2
  # With no face weights offline, DTL2 here runs on random features: the wider ResNet-18 gives separable ones.
  c.model.backbone = arg.backbone or ("resnet18" if arg.method == "svm" else "resnet_tiny")
  c.model.input_size = 48
  c.input.batch_size = 16
  c.input.eval_batch_size = 32
  c.optim.name = "adamw"
  c.optim.lr = 3e-3
  c.optim.weight_decay = 1e-4
  c.optim.warmup_epochs = 1.0
  c.train.epochs = 12.0
  c.train.checkpoint_every_steps = 50
  c.svm.select_C = True
  c.leakage.embedder = ""  # Shapes, not faces: duplicate checks only, no same-person check.
  return c
