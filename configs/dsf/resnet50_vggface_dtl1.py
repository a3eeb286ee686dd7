"""ResNet50 FT, pretraining VGG-Face (here VGGFace2): DTL1.

DTL1 (fine-tuning: SGD momentum 0.9, lr 5e-5, weight decay 5e-4, new final layer).

Weights: the paper's 'ResNet50 VGG-Face' weights are unpublished; the nearest public face-trained ResNet-50 is
VGGFace2's (cydonia999 resnet50_scratch_weight.pkl: --arch resnet50_vggface2).
  python tools/convert_weights.py --arch resnet50_vggface2 --src <file> --out weights/resnet50-vggface2-scratch --verify
Data: data/dsf-<task>-vggface224 (README, "Reproducing the paper with DSF": prepare, then align --style vggface224).

  python -m jfacediag.train --config configs/dsf/resnet50_vggface_dtl1.py
  python -m jfacediag.cv --config configs/dsf/resnet50_vggface_dtl1.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/resnet50_vggface_dtl1.py:task=multi
  python -m jfacediag.cv --config configs/dsf/resnet50_vggface_dtl1.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 3, 60 test images): acc 91.7, prec 100.0, sens 83.3, spec 100.0, f1 90.9.
Paper, multi task (Table 5, 150 test images): acc 82.0.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("resnet50_vggface_dtl1", arg)
