#!/usr/bin/env python
"""Matching speed: P probes against a gallery of G photos of C conditions (random unit 128-d embeddings), ranked
by jfacediag.match's own Ranker in probe blocks: nearest case and centroid per condition, the 3 nearest cases of
the top 5 conditions per probe.

  python tools/bench_match.py --probes 10000 --gallery 100000 --conditions 1000

Prints the seconds and probes/s.
"""
import argparse
import sys
import time

import numpy as np

from jfacediag import cli_front, match


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--probes", type=int, default=10_000)
  ap.add_argument("--gallery", type=int, default=100_000)
  ap.add_argument("--conditions", type=int, default=1000)
  ap.add_argument("--dim", type=int, default=128)
  ap.add_argument("--embedders", type=int, default=1)
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def main(argv=None):
  a = parse(argv)
  rng = np.random.default_rng(0)

  def unit(n):
    x = rng.normal(size=(n, a.dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  gallery = [unit(a.gallery) for _ in range(a.embedders)]
  probes = [unit(a.probes) for _ in range(a.embedders)]
  labels = rng.integers(0, a.conditions, a.gallery)
  t0 = time.perf_counter()
  ranker = match.Ranker(gallery, labels, [f"c{i}" for i in range(a.conditions)])
  t1 = time.perf_counter()
  found = 0
  for lo in range(0, a.probes, 256):
    best, _cent, sim = ranker.rank([p[lo:lo + 256] for p in probes])
    for k in range(len(best)):
      for j in np.argsort(-best[k])[:5]:
        found += len(ranker.nearest(sim[k], j))
  t2 = time.perf_counter()
  print(f"{a.probes} probes x {a.gallery} gallery photos ({a.conditions} conditions, {a.dim}-d, {a.embedders} "
        f"embedder(s)): ranker set-up {t1 - t0:.1f}s, ranking {t2 - t1:.1f}s ({a.probes / (t2 - t1):.0f} probes/s); "
        f"{found} nearest cases listed")


if __name__ == "__main__":
  main()
