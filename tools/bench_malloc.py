r"""Times a train step under the memory settings of jfacediag/cpu.py, each in its own process (they apply before the
process starts): huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, what `python -m jfacediag.*` commands get) and
glibc's defaults (what a script gets, and JFACEDIAG_CPU_MALLOC=0). Steps run one at a time, as the trainer's.

  python tools/bench_malloc.py [--model resnet50] [--size 224] [--batch 8] [--steps 3]

Prints one line per setting: seconds per step, page faults per step, user and system CPU seconds per step.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

from jfacediag import cpu


def child(args):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jfacediag import base_config, models, optim, sharding, steps  # pylint: disable=g-import-not-at-top
  from jfacediag.models import classifier  # pylint: disable=g-import-not-at-top
  model = classifier.Classifier(models.get(args.model).make(), 5)
  variables = steps.init_variables(model, 0, args.size)
  cfg = base_config.get_config().optim
  lr = optax.constant_schedule(cfg.lr)
  tx = optim.make(cfg, variables["params"], lr)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]),
                           rng=jax.random.key_data(jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 5, args.batch), jnp.int32)}
  step = steps.make_train_step(model, tx, sharding.make_mesh(), 5, 0.0, True, lr)
  for _ in range(2):
    state, m = step(state, batch)
    jax.block_until_ready(m)
  r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(args.steps):
    state, m = step(state, batch)
    jax.block_until_ready(m)
  r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  n = args.steps
  print(json.dumps({"memory": cpu.describe(), "step_s": (t1 - t0) / n,
                    "faults": (r1.ru_minflt - r0.ru_minflt) / n, "user_s": (r1.ru_utime - r0.ru_utime) / n,
                    "sys_s": (r1.ru_stime - r0.ru_stime) / n}))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", default="resnet50")
  ap.add_argument("--size", type=int, default=224)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    return child(args)
  print(f"{args.model} at {args.size} px, batch {args.batch}, {args.steps} train steps after 2 warm-up steps",
        flush=True)
  base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  settings = (dict(base, GLIBC_TUNABLES=cpu.HUGE_PAGES, JFACEDIAG_CPU_MALLOC="1"), dict(base, JFACEDIAG_CPU_MALLOC="0"))
  for env in settings:
    out = subprocess.run([sys.executable, __file__, "--child"] + sys.argv[1:], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode:
      sys.exit(f"{env.get('GLIBC_TUNABLES', '')} JFACEDIAG_CPU_MALLOC={env['JFACEDIAG_CPU_MALLOC']} failed:\n"
               f"{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {r['memory']:52s} {r['step_s']:6.2f} s/step  {r['faults']:9.0f} page faults/step  "
          f"user {r['user_s']:5.2f} s  system {r['sys_s']:5.2f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
