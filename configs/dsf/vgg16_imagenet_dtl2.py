"""VGG16 FE+SVM, pretraining ImageNet: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: torchvision vgg16-397923af.pth: --arch vgg16.
  python tools/convert_weights.py --arch vgg16 --src <file> --out weights/vgg16-imagenet --verify
Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF": prepare, then align --style paper).

  python -m jfacediag.train --config configs/dsf/vgg16_imagenet_dtl2.py
  python -m jfacediag.cv --config configs/dsf/vgg16_imagenet_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/vgg16_imagenet_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/vgg16_imagenet_dtl2.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 4, 60 test images): acc 88.3, prec 84.8, sens 93.3, spec 83.3, f1 88.8.
Paper, multi task (Table 5, 150 test images): acc 78.0.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("vgg16_imagenet_dtl2", arg)
