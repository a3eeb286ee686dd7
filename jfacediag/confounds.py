"""Confounds: accuracy per image attribute (ethnicity, sex, age group, ...) and whether an attribute alone predicts
the label.

eval.metadata is a CSV with a `file` column (relative to data.dir, or a bare file name when that is unique) and one
column per attribute. For each attribute the report gives test accuracy per value and per (value, class), the
chi-squared test of independence of attribute and class over all usable images, and an attribute-only classifier
(the majority class of each attribute value on the train split, applied to the test split). When that classifier
beats the majority-class rate, or the test rejects independence at p < 0.05, the report warns: the network can
score by recognising the attribute (the DSF classes are confounded with ethnicity, paper Table 2).
"""
import collections
import csv
import io
import os

import numpy as np
from scipy import stats

from jfacediag import fileio


def load(path, files, aliases=None):
  """{file: {attribute: value}} for the manifest's `files`; raises on a CSV without a `file` column. `aliases` maps
  the CSV's names to the manifest's: an aligned folder's source photo -> its crop (a.jpg -> a.png)."""
  text = fileio.read_text(path)
  reader = csv.DictReader(io.StringIO(text, newline=""))
  if not reader.fieldnames or "file" not in reader.fieldnames:
    raise ValueError(f"eval.metadata={path!r} needs a `file` column; found columns {reader.fieldnames}")
  by_base = collections.defaultdict(list)
  for f in files:
    by_base[os.path.basename(f)].append(f)
  out = {}
  for row in reader:
    name = row.pop("file").replace(os.sep, "/")
    name = (aliases or {}).get(name, name)
    key = name if name in files else (by_base[os.path.basename(name)][0]
                                      if len(by_base.get(os.path.basename(name), [])) == 1 else None)
    if key is not None:
      out[key] = {k: (v or "").strip() or "unknown" for k, v in row.items()}
  return out


def analyse(meta, rows, classes, test_files, test_labels, pred):
  """The confounds section of metrics.json: see the module docstring."""
  attrs = sorted({a for v in meta.values() for a in v})
  out = {"attributes": {}, "missing_test_files": sorted(f for f in test_files if f not in meta), "warnings": []}
  by_file = {r.file: r for r in rows}
  for attr in attrs:
    values = sorted({m[attr] for m in meta.values()})
    # Test accuracy per value and per (value, class).
    per_value = {}
    for v in values:
      idx = [i for i, f in enumerate(test_files) if meta.get(f, {}).get(attr) == v]
      if not idx:
        continue
      per_class = {}
      for c, name in enumerate(classes):
        sel = [i for i in idx if test_labels[i] == c]
        if sel:
          per_class[name] = {"n": len(sel), "accuracy": float(np.mean(pred[sel] == c))}
      per_value[v] = {"n": len(idx), "accuracy": float(np.mean(pred[idx] == test_labels[idx])), "per_class": per_class}
    # Association with the label over all usable images.
    usable = [(m[attr], by_file[f].class_name, by_file[f].split) for f, m in meta.items()
              if f in by_file and by_file[f].split not in ("skipped", "unused")]
    table = np.array([[sum(1 for a, c, _ in usable if a == v and c == k) for k in classes] for v in values])
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    p = float(stats.chi2_contingency(table).pvalue) if table.shape[0] > 1 and table.shape[1] > 1 else None
    # Attribute-only classifier: majority class per value on train, scored on test.
    train_counts = collections.Counter((a, c) for a, c, s in usable if s in ("train", "val"))
    overall = collections.Counter(c for a, c, s in usable if s in ("train", "val")).most_common(1)
    guess = {v: max(classes, key=lambda k: (train_counts[(v, k)], overall and k == overall[0][0])) for v in values}
    test_pairs = [(meta[f][attr], classes[test_labels[i]]) for i, f in enumerate(test_files) if f in meta]
    attr_acc = float(np.mean([guess[a] == c for a, c in test_pairs])) if test_pairs else None
    majority = (collections.Counter(c for _, c in test_pairs).most_common(1)[0][1] / len(test_pairs)
                if test_pairs else None)
    out["attributes"][attr] = {"per_value": per_value, "contingency": {"values": values, "classes": classes},
                               "chi2_p": p, "attribute_only_accuracy": attr_acc, "majority_rate": majority,
                               "attribute_only_rule": guess}
    if attr_acc is not None and (attr_acc > majority or (p is not None and p < 0.05)):
      out["warnings"].append(
          f"{attr} alone predicts the label: attribute-only accuracy {100 * attr_acc:.1f}% on the test split vs "
          f"{100 * majority:.1f}% majority-class rate; chi-squared independence p = "
          + (f"{p:.2g}" if p is not None else "n/a") + ". Part of any result may be recognising the "
          f"{attr}; compare the per-{attr} accuracies.")
  return out


def report_lines(conf):
  lines = []
  for w in conf["warnings"]:
    lines.append(f"**Warning:** {w}")
    lines.append("")
  for attr, a in conf["attributes"].items():
    classes = a["contingency"]["classes"]
    lines += [f"### {attr}", "", f"| {attr} | test images | accuracy % | " + " | ".join(
        f"{c} (n, acc %)" for c in classes) + " |", "|" + "---|" * (3 + len(classes))]
    for v, pv in a["per_value"].items():
      cells = [f"{pv['per_class'][c]['n']}, {100 * pv['per_class'][c]['accuracy']:.0f}" if c in pv["per_class"]
               else "-" for c in classes]
      lines.append(f"| {v} | {pv['n']} | {100 * pv['accuracy']:.1f} | " + " | ".join(cells) + " |")
    acc = a["attribute_only_accuracy"]
    lines += ["", f"Attribute-only classifier (majority class per {attr} value on train): "
              + (f"{100 * acc:.1f}% on test vs majority-class rate {100 * a['majority_rate']:.1f}%" if acc is not None
                 else "n/a") + "; chi-squared independence of attribute and class p = "
              + (f"{a['chi2_p']:.2g}" if a["chi2_p"] is not None else "n/a") + ".", ""]
  if conf["missing_test_files"]:
    lines.append(f"{len(conf['missing_test_files'])} test image(s) have no metadata row: "
                 + ", ".join(f"`{f}`" for f in conf["missing_test_files"][:20]))
  return lines
