"""Scalars to TensorBoard (WORKDIR/tensorboard) and to WORKDIR/history.jsonl; process 0 only.

history.jsonl is the run's record (curves.png is drawn from it). On resume it is cut back to the restored step, so
a resumed run's history equals that of a run that never stopped.
"""
import json
import os

import jax

from jfacediag import fileio
from jfacediag.tf_import import tf

HISTORY = "history.jsonl"


def read_history(workdir):
  path = os.path.join(workdir, HISTORY)
  if not fileio.exists(path):
    return []
  return [json.loads(line) for line in fileio.read_text(path).splitlines() if line.strip()]


class MetricWriter:

  def __init__(self, workdir, resume_step=0):
    self.on = jax.process_index() == 0
    self.path = os.path.join(workdir, HISTORY)
    if not self.on:
      return
    kept = [h for h in read_history(workdir) if h["step"] <= resume_step]
    with fileio.open(self.path, "w") as f:
      f.write("".join(json.dumps(h) + "\n" for h in kept))
    self.tb = tf().summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step, **scalars):
    if not self.on:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    fileio.append(self.path, json.dumps({"step": int(step), **scalars}) + "\n")
    with self.tb.as_default(step=int(step)):
      for k, v in scalars.items():
        if k != "epoch":
          tf().summary.scalar(k.replace("_", "/", 1), v)

  def close(self):
    if self.on:
      self.tb.flush()
      self.tb.close()
