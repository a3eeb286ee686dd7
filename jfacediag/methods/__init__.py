"""The methods a run can use (config.method), one module each behind the interface that methods/base.py states:
finetune (DTL1), svm (DTL2) and dsift (the non-deep baseline)."""
from jfacediag.methods import dsift, finetune, svm

BY_NAME = {m.NAME: m for m in (svm, finetune, dsift)}  # The order a comparison runs them in.


def get(name):
  if name not in BY_NAME:
    raise ValueError(f"method={name!r}; expected one of {', '.join(BY_NAME)}")
  return BY_NAME[name]
