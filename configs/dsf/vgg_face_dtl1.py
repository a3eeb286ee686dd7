"""VGG16 FT, pretraining VGG-Face: DTL1.

DTL1 (fine-tuning: SGD momentum 0.9, lr 5e-5, weight decay 5e-4, new final layer).

Weights: VGG-Face (Parkhi 2015) albanie vgg_face_dag.pth or prlz77 VGG_FACE port: --arch vgg_face.
  python tools/convert_weights.py --arch vgg_face --src <file> --out weights/vgg-face --verify
Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF": prepare, then align --style paper).

  python -m jfacediag.train --config configs/dsf/vgg_face_dtl1.py
  python -m jfacediag.cv --config configs/dsf/vgg_face_dtl1.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/vgg_face_dtl1.py:task=multi
  python -m jfacediag.cv --config configs/dsf/vgg_face_dtl1.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 3, 60 test images): acc 93.3, prec 93.3, sens 93.3, spec 93.3, f1 93.3, auc 0.969.
Paper, multi task (Table 5, 150 test images): acc 86.7.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("vgg_face_dtl1", arg)
