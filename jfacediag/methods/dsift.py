"""The paper's non-deep baseline: dense SIFT, a bag of visual words and an SVM (jfacediag/dsift.py); no network.
A fitted model in the workdir (dsift_model.npz) is re-evaluated, not refitted."""
import os
import time

import jax

from jfacediag import dsift as bag_of_words, progress, rundir
from jfacediag.methods import base

NAME = "dsift"
LABEL = "dense SIFT + bag of words + SVM"
SHORT = "DSIFT + SVM"
SCORES = "svm_margin"
CALIBRATION = "platt"
NETWORK = False


def run(config, workdir, ds):
  (tr_files, tr_labels), num_classes = ds.train, len(ds.classes)
  model = bag_of_words.load(workdir)
  if model is None:
    t0 = time.perf_counter()
    model, h = bag_of_words.fit(ds.root, tr_files, tr_labels, num_classes, config, config.seed, progress.log)
    scores = bag_of_words.heldout_scores(h, tr_labels, num_classes, model, config, config.seed)
    if jax.process_index() == 0:
      if scores is not None:
        rundir.write_heldout(workdir, scores, tr_labels)
      bag_of_words.save(workdir, model)
    progress.log(f"dsift fitted in {time.perf_counter() - t0:.1f}s; model in "
                 f"{os.path.join(workdir, bag_of_words.MODEL_FILE)}")
  else:
    progress.log(f"Found a fitted dsift model in {workdir}; re-evaluating it.")
  size, out = int(model["size"]), {}
  for split in ("test", "holdout"):
    files = ds.examples[split][0]
    if files:
      descs = bag_of_words.all_descriptors(ds.root, files, config.dsift, size, f"dsift: {split}")
      out[split] = bag_of_words.scores(model, bag_of_words.histograms(descs, model["centers"]), num_classes)
  return base.Outcome(out, rundir.read_heldout(workdir), 0, NAME)
