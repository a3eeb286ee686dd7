r"""The same-photo tier's figures on a folder of class folders: SIFT inliers of pairs that cannot be one photo (the
most similar pairs across classes, random pairs within classes), with and without the alignment fill masked, and
the inlier bar the leakage guard calibrates from them (docs/leakage.md).

  python tools/same_photo_null.py --folder /tmp/asd112 --pairs 100

The folder is read as the guard reads it: crops of a jfacediag.align template folder as they are, else YuNet and
arcface112 alignment. Prints each set's median, 90th percentile and maximum, and the highest counts.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jfacediag import base_config
from jfacediag.data import images
from jfacediag.leakage import faces, same_photo


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--folder", required=True, help="FOLDER/<class>/<image>")
  ap.add_argument("--pairs", type=int, default=100, help="pairs of each kind")
  ap.add_argument("--embedder", default="builtin:sface")
  return ap.parse_args(argv)


def main(argv=None):
  args = parse(argv)
  root = args.folder
  files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                 if f.lower().endswith(images.IMAGE_EXTENSIONS) and os.path.dirname(os.path.join(d, f)) != root)
  classes = [f.split(os.sep)[0] for f in files]
  face_set = faces.Faces(root, files)
  emb, _ = faces.embeddings(face_set, args.embedder, show_progress=True)
  have = np.nonzero(~np.isnan(emb[:, 0]))[0]
  names = sorted(set(classes))
  labels = np.array([names.index(classes[i]) for i in have])
  floor = base_config.get_config().leakage.same_photo_min_cosine
  pairs = same_photo.null_pairs(emb[have], labels, np.random.default_rng(0), floor, args.pairs, args.pairs)
  cross = [p for p in pairs if labels[p[0]] != labels[p[1]]]
  within = [p for p in pairs if labels[p[0]] == labels[p[1]]]
  feats = {}
  for mask in (False, True):
    counts = {}
    for name, ps in (("most similar pairs across classes", cross), ("random pairs within classes", within)):
      got = []
      for a, b in ps:
        for k in (a, b):
          if (k, mask) not in feats:
            feats[(k, mask)] = same_photo.features(face_set.crop(int(have[k]), 224), mask=mask)
        got.append(same_photo.inliers(feats[(a, mask)], feats[(b, mask)]))
      counts[name] = np.array(got)
      print(f"fill {'masked' if mask else 'not masked'}, {len(got)} {name}: median {np.median(got):g}, 90th "
            f"percentile {np.percentile(got, 90):g}, most {max(got, default=0)}; highest {sorted(got)[-5:]}")
    if mask:
      null = np.concatenate(list(counts.values()))
      print("calibrated bar: " + same_photo.calibrate(null, base_config.get_config().leakage.false_match_rate,
                                                       base_config.get_config().leakage.same_photo_inliers)["source"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
