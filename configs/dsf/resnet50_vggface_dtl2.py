"""ResNet50 FE+SVM, pretraining VGG-Face (here VGGFace2): DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: the paper's 'ResNet50 VGG-Face' weights are unpublished; the nearest public face-trained ResNet-50 is
VGGFace2's (cydonia999 resnet50_scratch_weight.pkl: --arch resnet50_vggface2).
  python tools/convert_weights.py --arch resnet50_vggface2 --src <file> --out weights/resnet50-vggface2-scratch --verify
Data: data/dsf-<task>-vggface224 (README, "Reproducing the paper with DSF": prepare, then align --style vggface224).

  python -m jfacediag.train --config configs/dsf/resnet50_vggface_dtl2.py
  python -m jfacediag.cv --config configs/dsf/resnet50_vggface_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/resnet50_vggface_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/resnet50_vggface_dtl2.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 4, 60 test images): acc 86.7, prec 95.8, sens 76.7, spec 96.7, f1 85.2.
Paper, multi task (Table 5, 150 test images): acc 88.7.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("resnet50_vggface_dtl2", arg)
