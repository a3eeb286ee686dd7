"""iResNet-100 FE+SVM, pretraining ArcFace: DTL2.

DTL2 (frozen features of the layer before the last fully connected one + linear SVM).

Weights: insightface arcface_torch ms1mv3_arcface_r100 backbone.pth (--arch iresnet100), or glint360k_r100.onnx /
antelopev2 through the ONNX importer.
  python tools/convert_weights.py --arch iresnet100 --src <file> --out weights/iresnet100-arcface --verify
Data: data/dsf-<task>-arcface112 (README, "Reproducing the paper with DSF": prepare, then align --style arcface112).

  python -m jfacediag.train --config configs/dsf/iresnet100_arcface_dtl2.py
  python -m jfacediag.cv --config configs/dsf/iresnet100_arcface_dtl2.py --folds 5 --repeats 10
  python -m jfacediag.train --config configs/dsf/iresnet100_arcface_dtl2.py:task=multi
  python -m jfacediag.cv --config configs/dsf/iresnet100_arcface_dtl2.py:task=multi --folds 5 --repeats 10

Not in the paper (a modern addition): no published number for DSF.
Expected: not measured here (DSF is not redistributable; no run of this config exists yet). One test image moves
accuracy by 1.7 points (binary) or 0.7 (multi): compare with the paper through the report's exact binomial interval
and the CV interval, not the point estimate. Unstated settings (batch 16, no augmentation, ...): jfacediag/paper.py.
"""
from jfacediag import paper


def get_config(arg=None):
  return paper.config("iresnet100_arcface_dtl2", arg)
