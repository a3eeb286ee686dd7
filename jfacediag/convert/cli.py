"""Converts a PyTorch / safetensors / numpy-pickle checkpoint into a jfacediag weights directory.

  python tools/convert_weights.py --arch iresnet50 --src backbone.pth --out weights/iresnet50-ms1mv3 --verify

The output (metadata.json + variables/) is what `config.init.checkpoint` loads. Nothing in the file is executed:
torch files go through torch.load(weights_only=True), numpy pickles through an unpickler that admits arrays only.
"""
import argparse
import json
import os
import sys
import time

from jfacediag import cli_front, fileio, models
from jfacediag.convert import mapping, onnx_import, sources, verify
from jfacediag.models import weights


def _epilog():
  lines = ["architectures (input, colour, mean / std in 0-255 units, feature layer; what to convert):"]
  for a in models.convertible().values():
    pp = a.preprocessing
    feat = a.feature_layer or "box / landmark / face-probability heads"
    lines.append(f"  {a.name:20s} {pp.input_size}px {pp.channel_order} mean {list(pp.mean)} std {list(pp.std)}; "
                 f"{feat}\n  {'':20s} {a.note}")
    lines += [f"  {'':20s} {label} keys: {q.channel_order} mean {list(q.mean)}" for label, _, q in a.namings]
  return "\n".join(lines)


class VerifyError(ValueError):
  pass


def _fits(arch, state_dict):
  try:
    mapping.convert(arch, state_dict)
  except mapping.ConversionError:
    return False
  return True


def _fitting(state_dict, exclude):
  """The other convertible architectures this state_dict converts into exactly (a second variant of a net)."""
  return [a.name for a in models.convertible().values()
          if a.name != exclude and a.kind != "onnx" and _fits(a, state_dict)]


def parse(argv):
  ap = cli_front.ArgumentParser(prog="convert_weights.py", description=__doc__, epilog=_epilog(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--arch", required=True, choices=sorted(models.convertible()), metavar="ARCH",
                  help="see the list below")
  ap.add_argument("--src", required=True,
                  help=".pth/.pt/.ckpt (zip or legacy), .safetensors, a numpy .pkl/.npy, or .onnx (sface, iresnet*)")
  ap.add_argument("--out", required=True, help="output weights directory")
  ap.add_argument("--verify", action="store_true", help="compare against the PyTorch reference (needs torch)")
  ap.add_argument("--verify-images", nargs="*", default=(), help="images to verify on instead of random inputs")
  ap.add_argument("--verify-size", type=int, default=0, help="input side for --verify (default: per arch)")
  ap.add_argument("--tolerance", type=float, default=1e-4, help="max |diff| / max |output| accepted by --verify")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def run(args):
  """Converts (and verifies); returns the summary dict. Raises on any failure."""
  arch = models.get(args.arch)
  t0 = time.perf_counter()
  print(f"Reading {args.src} ...", flush=True)
  is_onnx = args.src.endswith(".onnx")
  if arch.kind == "onnx" and not is_onnx:
    raise ValueError(f"--arch {arch.name} converts from an .onnx file; got {args.src}")
  digest = fileio.sha256(args.src)
  if is_onnx:
    state_dict = None
    variables, info = onnx_import.convert(arch, args.src)
  else:
    state_dict = sources.read(args.src)
    try:
      variables, info = mapping.convert(arch, state_dict)
    except mapping.ConversionError as e:
      print(f"The file does not fit --arch {arch.name}; trying the other architectures ...", flush=True)
      others = _fitting(state_dict, arch.name)
      raise mapping.ConversionError(f"{e}" + (f"The file fits --arch {' and '.join(others)}." if others else
                                              "No other --arch fits it either.")) from None
  t_convert = time.perf_counter() - t0
  hint = ""
  if arch.classes and info["upstream_classes"] and info["upstream_classes"] not in arch.classes:
    others = [a.name for a in models.convertible().values()
              if info["upstream_classes"] in a.classes and _fits(a, state_dict)]
    hint = (f"The checkpoint's classifier has {info['upstream_classes']} outputs; published {arch.name} weights have "
            f"{list(arch.classes)}. Same key names do not mean the same network"
            + (f": this looks like {' or '.join(others)} (--arch {others[0]})." if others else "."))
    print(f"WARNING: {hint}", flush=True)
  pp, naming = arch.source_preprocessing(state_dict or {})
  if naming:
    print(f"  source naming: {naming}; preprocessing {pp.channel_order}, mean {list(pp.mean)}, std {list(pp.std)}",
          flush=True)
  metadata = {"arch": arch.name, "source": os.path.basename(args.src), "sha256": digest,
              "preprocessing": pp.to_dict(), "source_naming": naming, "feature_dim": arch.feature_dim,
              "feature_layer": arch.feature_layer, "upstream_classes": info["upstream_classes"],
              "parameters": info["parameters"], "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  weights.save(args.out, variables, metadata)
  t_total = time.perf_counter() - t0
  summary = {"arch": arch.name, "out": os.path.abspath(args.out), "tensors": info["tensors"],
             **{k: info[k] for k in ("graph_constants", "folded_bn", "input_normalisation") if k in info},
             "parameters": info["parameters"], "convert_s": round(t_convert, 2), "total_s": round(t_total, 2)}
  print(f"Converted {info['tensors']} tensors ({info['parameters'] / 1e6:.2f}M parameters) in {t_convert:.1f}s; "
        f"wrote {args.out} in {t_total:.1f}s total.", flush=True)
  if is_onnx:
    print(f"  ONNX: input normalisation {info['input_normalisation']}; {info['folded_bn']} BatchNorms the exporter "
          f"folded into convs restored as bias-only BNs.", flush=True)
  if args.verify:
    x = (verify.image_input(arch, args.verify_images, args.verify_size) if args.verify_images
         else verify.random_input(arch, args.verify_size))
    if is_onnx:
      ref = {"features": onnx_import.onnxruntime_outputs(args.src, onnx_import.onnx_input(arch, x, info))}
    else:
      ref = verify.torch_outputs(arch, state_dict, x, info["upstream_classes"] or None)
    got = verify.flax_outputs(arch, variables, x)
    diffs = verify.compare(ref, got)
    summary["verify"] = {k: {"max_abs": a, "max_rel": r} for k, (a, r) in diffs.items()}
    for k, (a, r) in diffs.items():
      print(f"  verify {k:10s} max |diff| {a:.3e}  relative to max |output| {r:.3e}", flush=True)
    bad = {k: r for k, (_, r) in diffs.items() if not r <= args.tolerance}
    if bad or hint:
      raise VerifyError(f"--verify failed: {bad or ''} {hint}".strip())
    print(f"--verify passed (tolerance {args.tolerance:g} of the output scale, input {x.shape[2]}x{x.shape[3]}).")
  with open(os.path.join(args.out, "conversion.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


def main(argv=None):
  return cli_front.one_line_errors(run, parse(sys.argv[1:] if argv is None else argv))
