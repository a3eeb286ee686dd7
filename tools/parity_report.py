#!/usr/bin/env python
"""Parity and conversion time of every architecture: random PyTorch weights (random BatchNorm statistics too),
torch.save, convert with tools/convert_weights.py's code path, compare eval-mode outputs with the PyTorch reference.

  python tools/parity_report.py                 # all architectures
  python tools/parity_report.py iresnet100      # one

ONNX-only architectures (sface) are checked against onnxruntime by `convert_weights.py --verify` instead.
Prints one row per architecture: max |flax - torch| and that relative to max |torch output|, for the feature layer
and the upstream logits (or MTCNN's heads), and the conversion time (read + map + write, without --verify).
"""
import json
import sys
import tempfile
import time

import torch

from jfacediag import models
from jfacediag.convert import cli, sources, verify
from jfacediag.models import weights
from jfacediag.reference.randomize import randomize_


def main(names):
  rows = []
  for name in names or [n for n, a in models.convertible().items() if a.kind != "onnx"]:
    arch = models.get(name)
    if arch.kind == "onnx":
      raise SystemExit(f"{name} converts from ONNX: check it with tools/convert_weights.py --verify (onnxruntime)")
    torch.manual_seed(0)
    model = randomize_(arch.torch_ref(None))
    with tempfile.TemporaryDirectory() as d:
      torch.save(model.state_dict(), f"{d}/w.pth")
      t = time.perf_counter()
      summary = cli.run(cli.parse(["--arch", name, "--src", f"{d}/w.pth", "--out", f"{d}/out"]))
      seconds = time.perf_counter() - t
      variables = weights.load(f"{d}/out")[0]
      x = verify.random_input(arch, seed=1)
      head = variables.get("upstream_head")
      ref = verify.torch_outputs(arch, sources.read(f"{d}/w.pth"), x, head["kernel"].shape[1] if head else None)
      diffs = verify.compare(ref, verify.flax_outputs(arch, variables, x))
    rows.append({"arch": name, "params_M": round(summary["parameters"] / 1e6, 2), "input": x.shape[2],
                 "convert_s": round(seconds, 2), **{f"{k}_abs": a for k, (a, _) in diffs.items()},
                 **{f"{k}_rel": r for k, (_, r) in diffs.items()}})
    r = rows[-1]
    outs = ", ".join(f"{k} {a:.1e} (rel {rr:.1e})" for k, (a, rr) in diffs.items())
    print(f"{name:20s} {r['params_M']:7.2f}M  input {r['input']:3d}  convert {seconds:5.1f}s  {outs}", flush=True)
  print(json.dumps(rows))


if __name__ == "__main__":
  main(sys.argv[1:])
