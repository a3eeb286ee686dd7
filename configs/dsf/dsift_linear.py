"""DSIFT + SVM linear, pretraining -: the classical baseline.

The classical baseline (dense SIFT + bag of visual words + linear SVM).

No network and no weights. Data: data/dsf-<task>-paper (README, "Reproducing the paper with DSF").

  python -m jfacediag.train --config configs/dsf/dsift_linear.py
  python -m jfacediag.cv --config configs/dsf/dsift_linear.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/dsift_linear.py:task=multi
  python -m jfacediag.cv --config configs/dsf/dsift_linear.py:task=multi --folds 5 --repeats 10

Paper, binary task (Table 3, 60 test images): acc 71.7, prec 67.6, sens 83.3, spec 60.0, f1 74.6.
Paper, multi task (Table 5, 150 test images): acc 49.3.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("dsift_linear", arg)
