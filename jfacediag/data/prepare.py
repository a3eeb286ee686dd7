r"""Lays out a folder of classes as the paper's fixed split: DST/train/<class>/ and DST/test/<class>/.

  python -m jfacediag.data.prepare --src ~/Downloads/DSF --dst data/dsf-binary --task binary
  python -m jfacediag.data.prepare --src ~/Downloads/DSF --dst data/dsf-multi --task multi
  python -m jfacediag.data.prepare --src my_faces/ --dst data/mine --classes healthy,syndrome_x --train 40 --test 30

SRC holds one folder per class (any depth below it), or, with --class-regex, flat files whose names carry the
class (the regex's first group, e.g. '^([a-z]+)' for `beta12.jpg`). `--task binary` takes the DSF classes
beta-thalassemia and healthy, `--task multi` all five; folder names are matched by the aliases in DSF_CLASSES
(case and punctuation ignored; `--classes` names folders directly and works for any data set).

Per class, --train + --test images are drawn with --seed (default 0) from the readable images in sorted order;
the rest are listed as unused. Files are copied (or --link hard/sym linked) under their class, keeping their names.
DST/prepare.json records the seed, source, counts and every file's sha256, so the split can be checked and
reproduced. Rerunning the same command on the same DST verifies and changes nothing; a different DST content is an
error that shows the difference. Unreadable files are listed, never silently dropped.
"""
import argparse
import json
import os
import re
import shutil
import sys

import numpy as np

from jfacediag import cli_front, fileio
from jfacediag.data import images

# DSF (IEEE Dataport, doi:10.21227/rk2v-ka85): the paper's codes and the folder names a download may use.
DSF_CLASSES = {
    "beta_thalassemia": ("betathalassemia", "betathalassaemia", "thalassemia", "thalassaemia", "beta", "d1"),
    "hyperthyroidism": ("hyperthyroidism", "hyperthyroid", "hyper", "d2"),
    "down_syndrome": ("downsyndrome", "down", "d3"),
    "leprosy": ("leprosy", "d4"),
    "healthy": ("healthy", "normal", "control", "healthycontrol", "n0"),
}
TASKS = {"binary": ("beta_thalassemia", "healthy"), "multi": tuple(DSF_CLASSES)}
RECORD = "prepare.json"


def _key(name):
  return re.sub(r"[^a-z0-9]", "", name.lower())


def find_sources(src, class_regex=""):
  """{source class name: [relative file paths]} from class folders or (class_regex) from file names."""
  if not os.path.isdir(src):
    raise FileNotFoundError(f"--src {src!r} is not a directory")
  found = {}
  if class_regex:
    rx = re.compile(class_regex)
    for dirpath, dirnames, filenames in os.walk(src):
      dirnames.sort()
      for name in sorted(filenames):
        if name.startswith("."):
          continue
        m = rx.search(name)
        rel = os.path.relpath(os.path.join(dirpath, name), src)
        found.setdefault(m.group(1) if m else "<no match>", []).append(rel)
    return found
  for cls in sorted(os.listdir(src)):
    cdir = os.path.join(src, cls)
    if not os.path.isdir(cdir) or cls.startswith("."):
      continue
    for dirpath, dirnames, filenames in os.walk(cdir):
      dirnames.sort()
      found.setdefault(cls, []).extend(os.path.relpath(os.path.join(dirpath, n), src) for n in sorted(filenames)
                                       if not n.startswith("."))
  if not found:
    raise ValueError(f"--src {src!r} holds no class folders; for flat files pass --class-regex")
  return found


def match_classes(found, task, classes):
  """{output class: source class}. `classes` (comma-separated source names) wins over the task's DSF aliases."""
  if classes:
    wanted = [c.strip() for c in classes.split(",") if c.strip()]
    missing = [c for c in wanted if c not in found]
    if missing:
      raise ValueError(f"--classes {missing} not found in the source; it has {sorted(found)}")
    return {c: c for c in wanted}
  if task not in TASKS:
    raise ValueError(f"--task {task!r}; expected one of {sorted(TASKS)}, or name the folders with --classes")
  out = {}
  for cls in TASKS[task]:
    hits = [s for s in found if _key(s) in DSF_CLASSES[cls]]
    if len(hits) != 1:
      raise ValueError(f"class {cls!r}: " + (f"several source folders match ({hits})" if hits else
                                               f"no source folder matches the aliases {DSF_CLASSES[cls]}")
                       + f"; source folders: {sorted(found)}. Name them with --classes (output names = folder "
                         "names) or rename the folders")
    out[cls] = hits[0]
  return out


def plan(src, found, mapping, n_train, n_test, seed):
  """The split: {output class: {"train": [...], "test": [...], "unused": [...], "unreadable": [(file, why)]}}."""
  rng = np.random.default_rng(seed)
  out = {}
  for cls, source in mapping.items():
    readable, bad = [], []
    for rel in found[source]:
      why = ("not an image file extension" if not rel.lower().endswith(images.IMAGE_EXTENSIONS)
             else images.check(os.path.join(src, rel)))
      (bad.append((rel, why)) if why else readable.append(rel))
    if len(readable) < n_train + n_test:
      raise ValueError(f"class {cls!r} ({source}) has {len(readable)} readable images; --train {n_train} + --test "
                       f"{n_test} = {n_train + n_test} needed" + (f" ({len(bad)} unreadable)" if bad else ""))
    order = rng.permutation(len(readable))
    out[cls] = {"train": sorted(readable[i] for i in order[:n_train]),
                "test": sorted(readable[i] for i in order[n_train:n_train + n_test]),
                "unused": sorted(readable[i] for i in order[n_train + n_test:]), "unreadable": bad}
  return out


def _dest(dst, split, cls, rel):
  return os.path.join(dst, split, cls, rel.replace(os.sep, "__").replace("/", "__"))


def write(src, dst, split, link):
  """Copies or links the files; returns {dst relative path: sha256}."""
  digests = {}
  for cls, parts in split.items():
    for part in ("train", "test"):
      os.makedirs(os.path.join(dst, part, cls), exist_ok=True)
      for rel in parts[part]:
        s, d = os.path.join(src, rel), _dest(dst, part, cls, rel)
        if not os.path.exists(d):
          if link == "hard":
            os.link(s, d)
          elif link == "sym":
            os.symlink(os.path.abspath(s), d)
          else:
            shutil.copy2(s, d)
        digests[os.path.relpath(d, dst).replace(os.sep, "/")] = fileio.sha256(d)
  return digests


def parse(argv=None):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.data.prepare", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--src", required=True, help="the downloaded data set: one folder per class")
  ap.add_argument("--dst", required=True, help="output folder (train/<class>/, test/<class>/, prepare.json)")
  ap.add_argument("--task", default="", help="binary (beta-thalassemia vs healthy) or multi (the 5 DSF classes)")
  ap.add_argument("--classes", default="", help="comma-separated source class folders to use, in label order")
  ap.add_argument("--class-regex", default="", help="flat source: a regex whose group 1 is the class in file names")
  ap.add_argument("--train", type=int, default=40, help="train images per class (paper: 40)")
  ap.add_argument("--test", type=int, default=30, help="test images per class (paper: 30)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--link", choices=("copy", "hard", "sym"), default="copy")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def run(args):
  """Plans and writes the split into args.dst (resumable, refuses a different plan); prints the table."""
  found = find_sources(args.src, args.class_regex)
  mapping = match_classes(found, args.task, args.classes)
  split = plan(args.src, found, mapping, args.train, args.test, args.seed)
  record_path = os.path.join(args.dst, RECORD)
  settings = {"src": os.path.abspath(args.src), "task": args.task, "classes": list(mapping),
              "source_folders": mapping, "train_per_class": args.train, "test_per_class": args.test,
              "seed": args.seed, "split": {c: {k: v for k, v in p.items() if k != "unreadable"}
                                           for c, p in split.items()}}
  if os.path.exists(record_path):
    with open(record_path, encoding="utf-8") as f:
      old = json.load(f)
    diff = [k for k in ("classes", "train_per_class", "test_per_class", "seed", "split") if old.get(k) != settings[k]]
    if diff:
      raise ValueError(f"{args.dst} was prepared with other settings or files (differs in: {', '.join(diff)}); "
                       f"use another --dst or delete it")
  extra = set()
  for part in ("train", "test"):
    for cls in (os.listdir(os.path.join(args.dst, part)) if os.path.isdir(os.path.join(args.dst, part)) else []):
      if cls not in mapping:
        extra.add(f"{part}/{cls}")
  if extra:
    raise ValueError(f"{args.dst} holds class folders this split does not make: {sorted(extra)}")
  digests = write(args.src, args.dst, split, args.link)
  with open(record_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({**settings, "sha256": digests,
               "unreadable": {c: p["unreadable"] for c, p in split.items()}}, f, indent=1)
  os.replace(record_path + ".tmp", record_path)
  print(f"{args.dst}: {len(mapping)} classes, seed {args.seed}, {args.link} of {args.src}")
  print(f"{'class':<22} {'source folder':<24} {'train':>5} {'test':>5} {'unused':>6} {'unreadable':>10}")
  for cls, p in split.items():
    print(f"{cls:<22} {mapping[cls]:<24} {len(p['train']):>5} {len(p['test']):>5} {len(p['unused']):>6} "
          f"{len(p['unreadable']):>10}")
    for rel, why in p["unreadable"]:
      print(f"  unreadable: {rel}: {why}")
  print(f"Recorded in {os.path.join(args.dst, RECORD)}. Train with --config.data.dir={args.dst} (configs/dsf/*).")


def main(argv=None):
  return cli_front.one_line_errors(run, parse(argv))


if __name__ == "__main__":
  sys.exit(main())
