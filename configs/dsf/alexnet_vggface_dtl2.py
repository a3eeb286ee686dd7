"""AlexNet FE+SVM, pretraining VGG-Face: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: no public AlexNet trained on VGG-Face exists (the paper does not say where its came from): convert your own
torchvision-layout AlexNet with --arch alexnet.
  python tools/convert_weights.py --arch alexnet --src <file> --out weights/alexnet-vggface --verify
Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF": prepare, then align --style paper).

  python -m jfacediag.train --config configs/dsf/alexnet_vggface_dtl2.py
  python -m jfacediag.cv --config configs/dsf/alexnet_vggface_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/alexnet_vggface_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/alexnet_vggface_dtl2.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 4, 60 test images): acc 85.0, prec 86.2, sens 83.3, spec 86.7, f1 84.7.
Paper, multi task (Table 5, 150 test images): acc 86.0.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("alexnet_vggface_dtl2", arg)
