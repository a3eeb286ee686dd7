"""What the leakage guard keeps and says: the summary (WORKDIR/leakage.json), every pair (leakage_pairs.csv.gz),
the contact sheet of the top pairs (leakage_pairs.png), the log lines and the report.md section."""
import csv
import gzip
import io
import json
import os

import cv2
import numpy as np

from jfacediag import fileio
from jfacediag.data import images, records

KINDS = ("exact", "near", "same_photo", "same_person")  # Strongest first.
LEAKAGE_FILE = "leakage.json"
PAIRS_FILE = "leakage_pairs.csv.gz"
SHEET_FILE = "leakage_pairs.png"
HIST_EDGES = np.round(np.arange(-0.2, 1.0001, 0.1), 1)


def cross_split(pairs, split_of):
  """Pairs whose images lie in two different splits (of train, val, test, holdout), with the splits."""
  out = []
  for p in pairs:
    sa, sb = split_of.get(p["a"]), split_of.get(p["b"])
    if sa and sb and sa != sb and {sa, sb} <= {"train", "val", "test", "holdout"}:
      out.append({**p, "split_a": sa, "split_b": sb})
  return out


def most_alarming(pairs, n):
  """The n most alarming pairs: by kind (exact first), then by score."""
  return sorted(pairs, key=lambda p: (KINDS.index(p["kind"]), -p["score"]))[:n]


def _count(ps):
  return {k: sum(p.get("kind") == k for p in ps) for k in KINDS}


def summarise(found, split_of, group_by, top=20):
  """The small result a run keeps (leakage.json, metrics.json, the report): counts, thresholds, the histogram and
  the top pairs, never the full list."""
  cross = cross_split(found["pairs"], split_of)
  return {"files": found["files"], "settings": found["settings"], "identity": found["identity"],
          "same_photo": found.get("same_photo"), "across_classes": found.get("across_classes"),
          "no_face": len(found["no_face"]), "no_face_examples": found["no_face"][:10],
          "no_face_reason": found.get("no_face_reason", ""), "group_by": group_by,
          "pairs": _count(found["pairs"]), "cross_split": _count(cross), "top_cross_split": most_alarming(cross, top),
          "top_pairs": most_alarming(found["pairs"], top), "pairs_file": PAIRS_FILE, "sheet_file": SHEET_FILE}


def upgrade(leak):
  """A leakage.json read back on resume; one from an older release (lists of every pair) is summarised."""
  if not isinstance(leak.get("cross_split"), list):
    return leak
  return {"files": leak.get("files", 0), "settings": {}, "identity": None, "no_face": len(leak.get("no_face", [])),
          "no_face_examples": leak.get("no_face", [])[:10], "no_face_reason": "", "group_by": leak.get("group_by", ""),
          "pairs": _count(leak.get("pairs", [])), "cross_split": _count(leak["cross_split"]),
          "top_cross_split": most_alarming(leak["cross_split"], 20),
          "top_pairs": most_alarming(leak.get("pairs", []), 20),
          "pairs_file": LEAKAGE_FILE, "sheet_file": "(none: written by an older release)"}


def write(workdir, found, leak, root, split_of):
  """WORKDIR/leakage.json (the summary), leakage_pairs.csv.gz (every pair) and leakage_pairs.png (top pairs)."""
  with fileio.open(os.path.join(workdir, LEAKAGE_FILE), "w") as f:
    json.dump(leak, f, indent=1)
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["a", "b", "kind", "score", "hamming", "inliers", "split_a", "split_b"])
  for p in most_alarming(found["pairs"], len(found["pairs"])):
    w.writerow([p["a"], p["b"], p["kind"], p["score"], p.get("hamming", ""), p.get("inliers", ""),
                split_of.get(p["a"], ""), split_of.get(p["b"], "")])
  with fileio.open(os.path.join(workdir, PAIRS_FILE), "wb") as f:
    f.write(gzip.compress(buf.getvalue().encode()))
  shown = leak["top_cross_split"] or leak["top_pairs"]
  if shown:
    embedder = (leak.get("identity") or {}).get("embedder", "no identity check")
    contact_sheet(root, shown, os.path.join(workdir, SHEET_FILE),
                  ("across the split" if leak["top_cross_split"] else "all in one split")
                  + f" ({os.path.basename(workdir.rstrip('/'))}: {os.path.basename(root.rstrip('/'))}, {embedder})")


def contact_sheet(root, pairs, path, what, side=112):
  """One row per pair: both images (letterboxed squares), kind, score and splits."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  stored = records.read_images(root, sorted({p[k] for p in pairs for k in ("a", "b")})) if records.is_records(
      root) else None

  def square(f):
    try:
      img = stored[f] if stored is not None else images.load_rgb(os.path.join(root, f))
    except images.UnreadableImage:
      return np.zeros((side, side, 3), np.uint8)
    s = side / max(img.shape[:2])
    img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA)
    out = np.full((side, side, 3), 255, np.uint8)
    y, x = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out

  cols = 2
  rows = -(-len(pairs) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols / 2, 2.1 * rows), squeeze=False)
  for ax, p in zip(axes.ravel(), pairs):
    ax.imshow(np.concatenate([square(p["a"]), np.full((side, 6, 3), 255, np.uint8), square(p["b"])], 1))
    extra = f", {p['inliers']} inliers" if "inliers" in p else ""
    where = f"\n{p['split_a']} / {p['split_b']}" if "split_a" in p else ""
    name = lambda f: f[-28:].encode("ascii", "replace").decode()  # noqa: E731  (the plot font has no CJK glyphs)
    ax.set_title(f"{p['kind']} {p['score']:.3f}{extra}{where}\n{name(p['a'])}\n{name(p['b'])}", fontsize=6)
    ax.axis("off")
  for ax in axes.ravel()[len(pairs):]:
    ax.axis("off")
  height = fig.get_size_inches()[1]
  fig.suptitle(f"Leakage guard: top {len(pairs)} pairs {what}", fontsize=9, y=1 - 0.08 / height)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # The title's 0.4 inch stays clear of the first row's labels.
  fileio.makedirs(os.path.dirname(path))
  with fileio.open(path, "wb") as f:
    fig.savefig(f, dpi=110, format="png")
  plt.close(fig)




# == What the log and the report say ===================================================================================
def _histogram_line(ident):
  h = ident["histogram"]
  parts = [f"{lo:+.1f}..{hi:+.1f}: {n:,}" for lo, hi, n in zip(h["edges"], h["edges"][1:], h["counts"]) if n]
  return "cosine of face pairs: " + " | ".join(parts)


def _fmt(v, spec=".3f"):
  return "-" if v is None else format(v, spec)


def _identity_line(ident):
  mode = ident.get("mode", "pooled")
  where = f"{ident['faces_compared']} faces, {ident['pairs_compared']:,} pairs ({ident['faces']})"
  if mode == "off":
    return (f"  identity tier off (leakage.identity='off'): same-person pairs are not flagged, only exact, near and "
            f"same-photo ones (pooled threshold for reference {ident['threshold']:.3f}); {where}.")
  adult = (f"; the adult threshold {ident['model_threshold']} would flag {ident['above_model_threshold']:,} pairs "
           f"({100 * ident['above_model_threshold'] / max(1, ident['pairs_compared']):.1f}%)"
           if ident.get("above_model_threshold") is not None and ident["threshold"] != ident["model_threshold"]
           else "")
  expected = (f"; expected false same-person pairs at that rate: {ident['expected_false_pairs']:g}"
              if ident.get("expected_false_pairs") is not None else "")
  if mode == "per_class" and len(ident.get("per_condition") or []) > 1:
    return (f"  identity thresholds per condition pair, each calibrated on its own pairs (below; pooled "
            f"{ident['threshold']:.3f}: {ident['source']}); {where}{expected}{adult}.")
  return f"  identity threshold {ident['threshold']:.3f} ({ident['source']}); {where}{expected}{adult}."


def _condition_rows(ident):
  """One line per condition pair: its impostor fit, threshold, flagged and expected false pairs."""
  rows = ident.get("per_condition") or []
  if len(rows) < 2:
    return []
  rate = ident.get("false_match_rate")
  out = []
  for r in rows:
    exp = r.get("expected_false")
    out.append(f"    {r['a']} - {r['b']}: {r['pairs']:,} pairs, median {_fmt(r['median'])}, sigma {_fmt(r['sigma'])}; "
               f"threshold {r['threshold']:.3f} ({r['source']}): {r['above_own']:,} pairs above it "
               f"({r['flagged']:,} flagged same-person), expected false {_fmt(exp, '.1f')}"
               + (f" at {rate:g} per pair" if rate else "") + f"; {r['above_pooled']:,} above the pooled threshold.")
  return out


def _gestalt_lines(ident):
  out = []
  for r in ident.get("gestalt") or []:
    out.append(f"  NOTE: in {r['a']!r} different people sit closer than pairs across classes (median {r['median']:.3f} "
               f"against {r['cross_median']:.3f}, +{r['shift_sigma']:.1f} sigma): a shared facial gestalt. Its "
               f"threshold {r['threshold']:.3f} keeps false pairs near the stated rate, but two photos of one patient "
               f"scoring below it cannot be told from two patients; if each patient has one photo, "
               f"leakage.identity='off' keeps only the duplicate and same-photo tiers.")
  return out


def _same_photo_line(sp):
  if not sp:
    return []
  return [f"  same photo: cosine >= {sp['min_cosine']} and >= {sp['inliers']} SIFT inliers outside the alignment fill "
          f"({sp['source']}; {sp['checked']:,} candidate pair(s) checked)."]


def _across_classes_lines(across):
  if not across or not sum(across["counts"].values()):
    return []
  kinds = ", ".join(f"{n} {k.replace('_', '-')}" for k, n in across["counts"].items() if n)
  return [f"  WARNING: {kinds} pair(s) join two classes; one photo (or person) under two labels is a labelling "
          f"error or a look-alike: check " + ", ".join(f"{a} ~ {b}" for a, b in across["examples"][:3]) + "."]


def summary_lines(leak, top=10):
  """Human-readable lines for the log and report.md: counts, thresholds, histogram, the top pairs."""
  if not leak:
    return ["Not checked (leakage.check = False)."]
  n, c, x = leak["files"], leak["pairs"], leak["cross_split"]
  kinds = ", ".join(f"{c[k]} {k.replace('_', '-')}" for k in KINDS)
  lines = [f"{n} images checked: {kinds} pair(s); across the split: "
           + ", ".join(f"{x[k]} {k.replace('_', '-')}" for k in KINDS)
           + (f"; data.group_by={leak['group_by']!r} kept its clusters on one side." if leak.get("group_by") else
              (". Set data.group_by=identity (or duplicates) to keep each cluster on one side."
               if sum(x.values()) else "."))]
  ident = leak.get("identity")
  if ident:
    lines.append(_identity_line(ident))
    lines += _condition_rows(ident) + _gestalt_lines(ident)
    lines += _same_photo_line(leak.get("same_photo")) + _across_classes_lines(leak.get("across_classes"))
    lines.append("  " + _histogram_line(ident))
    if leak["no_face"]:
      lines.append(f"  {leak['no_face']} image(s) not compared by identity: {leak['no_face_reason']} (e.g. "
                   f"{', '.join(leak['no_face_examples'][:3])}).")
  else:
    lines.append("  No identity check (leakage.embedder is empty): duplicates only.")
  shown = leak["top_cross_split"][:top]
  if shown:
    lines.append(f"  Top {len(shown)} of {sum(x.values())} pairs across the split (all in {leak['pairs_file']}; "
                 f"contact sheet {leak['sheet_file']}):")
    lines += [f"    {p['kind']}: {p['a']} ({p['split_a']}) ~ {p['b']} ({p['split_b']}), score {p['score']}"
              + (f", {p['inliers']} inliers" if "inliers" in p else "") for p in shown]
  return lines


def report_md(leak, top=10):
  """The report.md section: the summary, the table per condition pair, the histogram, the top pairs across the
  split."""
  lines = summary_lines(leak, top=0)
  md = [lines[0], ""] + [line.strip() for line in lines[1:]
                         if not line.strip().startswith("cosine of face pairs") and not line.startswith("    ")]
  ident = leak.get("identity") if leak else None
  rows = (ident or {}).get("per_condition") or []
  if len(rows) > 1:
    rate = ident.get("false_match_rate")
    md += ["", f"| face pairs | pairs | median | sigma (1.4826 MAD) | threshold | source | pairs above it | "
               f"flagged same-person | expected false{f' at {rate:g}' if rate else ''} | "
               f"above the pooled {ident['threshold']:.3f} |", "|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['a']} - {r['b']} | {r['pairs']:,} | {_fmt(r['median'])} | {_fmt(r['sigma'])} | "
           f"{r['threshold']:.3f} | {r['source']} | {r['above_own']:,} | {r['flagged']:,} | "
           f"{_fmt(r.get('expected_false'), '.1f')} | {r['above_pooled']:,} |" for r in rows]
  if ident:
    h = ident["histogram"]
    md += ["", "| cosine | " + " | ".join(f"{lo:+.1f}" for lo in h["edges"][:-1]) + " |",
           "|---|" + "---|" * len(h["counts"]), "| face pairs | " + " | ".join(f"{n:,}" for n in h["counts"]) + " |"]
  shown = leak["top_cross_split"][:top] if leak and "top_cross_split" in leak else []
  if shown:
    md += ["", f"Top {len(shown)} of {sum(leak['cross_split'].values())} pairs across the split (every pair: "
           f"`{leak['pairs_file']}` in the workdir; pictures: `{leak['sheet_file']}`):", "",
           "| kind | image | split | image | split | score |", "|---|---|---|---|---|---|"]
    md += [f"| {p['kind']} | `{p['a']}` | {p['split_a']} | `{p['b']}` | {p['split_b']} | {p['score']}"
           + (f" ({p['inliers']} inliers)" if "inliers" in p else "") + " |" for p in shown]
  return md
