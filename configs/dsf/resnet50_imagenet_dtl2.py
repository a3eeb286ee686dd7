"""ResNet50 FE+SVM, pretraining ImageNet: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: torchvision resnet50-0676ba61.pth: --arch resnet50 (torchvision's v1.5 layout, 4.09 G multiply-adds; the
paper's MatConvNet model is the original layout, 3.87 G).
  python tools/convert_weights.py --arch resnet50 --src <file> --out weights/resnet50-imagenet --verify
Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF": prepare, then align --style paper).

  python -m jfacediag.train --config configs/dsf/resnet50_imagenet_dtl2.py
  python -m jfacediag.cv --config configs/dsf/resnet50_imagenet_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/resnet50_imagenet_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/resnet50_imagenet_dtl2.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 4, 60 test images): acc 91.7, prec 93.1, sens 90.0, spec 93.2, f1 91.5.
Paper, multi task (Table 5, 150 test images): acc 86.7.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("resnet50_imagenet_dtl2", arg)
