"""ResNet50 FE+SVM, pretraining VGGFace2 & MS-Celeb-1M: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: cydonia999 resnet50_ft_weight.pkl (MS-Celeb-1M, then VGGFace2): --arch resnet50_vggface2.
  python tools/convert_weights.py --arch resnet50_vggface2 --src <file> --out weights/resnet50-vggface2-ft --verify
Data: data/dsf-<task>-vggface224 (README, "Reproducing the paper with DSF": prepare, then align --style vggface224).

  python -m jfacediag.train --config configs/dsf/resnet50_ms1m_vggface2_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/resnet50_ms1m_vggface2_dtl2.py:task=multi --folds 5 --repeats 10

Paper, multi task (Table 6, 150 test images): acc 92.7.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("resnet50_ms1m_vggface2_dtl2", arg)
