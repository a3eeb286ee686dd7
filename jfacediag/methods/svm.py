"""DTL2: features of the frozen backbone on the devices, a LinearSVC on the host (jfacediag/svm.py), folded into the
network's head so that predict and Grad-CAM run the same network as fine-tuning. A fitted SVM in the workdir is
re-evaluated, not refitted."""
import time

import jax
import numpy as np

from jfacediag import checkpointing, network, progress, rundir, sharding, steps, svm as linear_svm
from jfacediag.methods import base

NAME = "svm"
LABEL = "DTL2 (frozen features + linear SVM)"
SHORT = "DTL2 (features + SVM)"
SCORES = "svm_margin"
CALIBRATION = "platt"
NETWORK = True


def run(config, workdir, ds):
  net = network.build(config, ds.classes, ds.root)
  mesh = sharding.make_mesh()
  (tr_files, tr_labels), n_val = ds.train, len(ds.val[0])
  if n_val:
    progress.log(f"Note: the SVM fits on the {len(tr_files)} train images; the {n_val} val images (data.val_fraction, "
                 "there for fine-tuning's epoch choice and calibration) are not used by this method"
                 + ("; C comes from an inner cross-validation on the train images." if config.svm.select_C else
                    f"; C = svm.C = {config.svm.C:g} (svm.select_C=True chooses it by inner cross-validation)."))
  rep = sharding.replicated(mesh)
  # From host values (numpy): device_put of arrays committed to one local device onto a sharding that spans several
  # processes builds global arrays whose shards orbax cannot read (a multi-process DTL2 run failed to save).
  variables = jax.device_put(jax.tree.map(np.asarray, net.variables), rep)
  ckpts = checkpointing.Checkpoints(workdir)
  like = steps.TrainState(step=np.zeros((), np.int32), params=variables["params"],
                          batch_stats=variables["batch_stats"], opt_state={},
                          rng=np.asarray(jax.random.key_data(jax.random.PRNGKey(config.seed))))
  ckpts.check_method(NAME)
  if ckpts.latest_step() is not None:
    state, meta = ckpts.restore(ckpts.latest_step(), like)
    progress.log(f"Found a fitted SVM in {workdir} (C={meta['C']}); re-evaluating it.")
    ckpts.close()
    return base.network_outcome(ds, net, {"params": state.params, "batch_stats": state.batch_stats}, 0, NAME,
                                rundir.read_heldout(workdir), base.predictor(config, ds, net, mesh))

  extract = steps.make_feature_step(net.model, mesh, steps.compute_dtype(config.dtype))
  dim = variables["params"]["head"]["kernel"].shape[0]
  t0 = time.perf_counter()
  feats = steps.run_batches(extract, variables, ds.root, tr_files, tr_labels, net.pp, config.input.eval_batch_size,
                            mesh, dim)
  progress.log(f"Extracted {len(tr_files)} x {dim} train features in {time.perf_counter() - t0:.1f}s.")
  fit, _ = linear_svm.fit(feats, tr_labels, len(ds.classes), config.svm, config.seed)
  progress.log(f"LinearSVC fitted, C={fit.C:g}" + (f" (inner {config.svm.cv_folds}-fold CV on train: {fit.cv})"
                                                   if fit.cv else "."))
  params = dict(variables["params"])
  params["head"] = {"kernel": np.asarray(fit.kernel, np.float32), "bias": np.asarray(fit.bias, np.float32)}
  state = jax.device_put(like.replace(params=params), rep)
  margins = linear_svm.heldout_margins(feats, tr_labels, len(ds.classes), config.svm, fit.C, config.seed)
  heldout = None if margins is None else (margins, tr_labels)
  if heldout is not None and jax.process_index() == 0:
    rundir.write_heldout(workdir, *heldout)
  ckpts.save(0, state, {"method": NAME, "C": fit.C, "cv_accuracy": fit.cv, "multiclass": config.svm.multiclass})
  ckpts.close()
  return base.network_outcome(ds, net, {"params": state.params, "batch_stats": state.batch_stats}, 0, NAME,
                              heldout, base.predictor(config, ds, net, mesh))
