"""AlexNet FE+SVM, pretraining ImageNet: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: torchvision alexnet-owt-7be5be79.pth: --arch alexnet.
  python tools/convert_weights.py --arch alexnet --src <file> --out weights/alexnet-imagenet --verify
Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF": prepare, then align --style paper).

  python -m jfacediag.train --config configs/dsf/alexnet_imagenet_dtl2.py
  python -m jfacediag.cv --config configs/dsf/alexnet_imagenet_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/alexnet_imagenet_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/alexnet_imagenet_dtl2.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 4, 60 test images): acc 90.0, prec 87.5, sens 93.3, spec 86.7, f1 90.3.
Paper, multi task (Table 5, 150 test images): acc 78.0.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("alexnet_imagenet_dtl2", arg)
