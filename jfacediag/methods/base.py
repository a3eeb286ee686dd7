"""What a method gives the evaluation, and the part the network methods share.

A method module (finetune.py, svm.py, dsift.py) exports
  NAME          its config.method value
  LABEL, SHORT  its name in a report and in a results table
  SCORES        what its raw scores are: "softmax" logits or "svm_margin"s (metrics.compute)
  CALIBRATION   the calibrator fitted on its held-out scores: "temperature" or "platt" (calibration.fit)
  NETWORK       whether it runs a backbone (model.*, init.* and preprocessing apply)
  run(config, workdir, ds) -> Outcome, or None when it stopped before the end (rerunning resumes)
"""
import dataclasses

from jfacediag import steps


@dataclasses.dataclass
class Outcome:
  scores: dict  # {split: raw scores [n, classes]} for "test" and, when the data have one, "holdout".
  heldout: tuple  # (raw scores, labels) of held-out training data for calibration; None when there are none.
  step: int  # The reported checkpoint's step (0 for fitted models).
  checkpoint: str  # Which: "last", "best", "svm" or "dsift".
  spec: object = None  # The backbone (models.Backbone or an ensemble's), None without a network.
  pp: object = None  # Its Preprocessing, None without a network.


def predictor(config, ds, net, mesh):
  """scores(variables, (files, labels)) -> logits, with one jitted predict step (compiled once per run)."""
  predict = steps.make_predict_step(net.model, mesh, steps.compute_dtype(config.dtype))
  return lambda variables, examples: steps.run_batches(predict, variables, ds.root, *examples, net.pp,
                                                       config.input.eval_batch_size, mesh, len(ds.classes))


def network_outcome(ds, net, variables, step, checkpoint, heldout, scores):
  """The Outcome of a network method: the trained `variables` scored (`scores`, from predictor) on the test and
  holdout images."""
  return Outcome({s: scores(variables, ds.examples[s]) for s in ("test", "holdout") if ds.examples[s][0]}, heldout,
                 step, checkpoint, net.spec, net.pp)
