"""Several methods side by side on the same data and split (config.compare = ("svm", "finetune")): each is an
ordinary run into WORKDIR/<method>/, then WORKDIR/report.md + comparison.json put them in one table.

  python -m jfacediag.train --config configs/demo.py        # the demo compares DTL2 and DTL1
"""
import os

import jax

from jfacediag import dataset, progress, report


def run(config, workdir, run_one):
  """run_one(config, workdir) -> metrics or None (jfacediag.train.run). Returns {method: metrics}, or None when a
  method stopped before the end (rerunning resumes it and runs the rest)."""
  root = dataset.data_dir_for(config, workdir)
  names, results = list(config.compare), {}
  for method in names:
    progress.log(f"== {method} ({len(results) + 1}/{len(names)}) " + "=" * 60)
    c = config.copy_and_resolve_references()
    c.method, c.compare, c.data.dir = method, (), root
    c.leakage.cache = c.leakage.cache or os.path.join(workdir, "leakage_cache.json.gz")  # Once for all methods.
    results[method] = run_one(c, os.path.join(workdir, method))
    if results[method] is None:  # Stopped (preemption, stop_after_steps): rerunning resumes this method.
      return None
  if jax.process_index() == 0:
    report.write_comparison(workdir, results, config)
  progress.log(f"Comparison of {', '.join(names)} in {os.path.join(workdir, 'report.md')}")
  return results
