r"""Aligns a folder of photos into face crops in a backbone's convention, keeping the class-folder layout.

  python -m jfacediag.align --src raw/ --dst aligned/ --style arcface112 --detector yunet
  python -m jfacediag.align --src raw/ --dst aligned224/ --style paper --detector mtcnn --mtcnn-weights weights/mtcnn

Writes into DST: the crops (PNG, same relative paths), `manifest.csv` (source, output, box, five landmarks, score,
detector, style, fallback), `no_face.csv` (every photo where no face was found), `errors.csv` (unreadable files
with the reason) and `align.json` (style, detector, size, counts; training reads the style from it). A rerun
skips every source already listed in those files, so an interrupted run resumes.
"""
import argparse
import dataclasses
import sys

from jfacediag import cli_front
from jfacediag.align import folder, styles


def parse(argv):
  ap = cli_front.ArgumentParser(prog="python -m jfacediag.align", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--src", required=True, help="folder of photos (class subfolders are kept)")
  ap.add_argument("--dst", required=True, help="output folder")
  ap.add_argument("--style", default="arcface112", choices=styles.STYLES)
  ap.add_argument("--size", type=int, default=0, help="output side (default: the style's own)")
  ap.add_argument("--detector", default="yunet", choices=("yunet", "mtcnn"))
  ap.add_argument("--mtcnn-weights", default="", help="folder with pnet/ rnet/ onet/ converted weights")
  ap.add_argument("--max-detect-side", type=int, default=0,
                  help="detect on a copy downscaled to this longer side (0: full size, as upstream; 1280 makes "
                       "MTCNN about 4x faster on 2-3k px photos and moves boxes by 1-3%%); crops use the original")
  ap.add_argument("--all-faces", action="store_true", help="keep every face (default: the largest one)")
  ap.add_argument("--fallback", default="none", choices=("none", "center"),
                  help="no face found: list it only (none) or also write a centre crop marked as a fallback")
  ap.add_argument("--jobs", type=int, default=1, help="worker processes")
  return ap.parse_args(cli_front.dashes(sys.argv[1:] if argv is None else argv))


def run(args):
  """The flags -> jfacediag.align.folder.align."""
  opts = folder.Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(folder.Options)})
  return folder.align(args.src, args.dst, opts)


def main(argv=None):
  return cli_front.one_line_errors(run, parse(sys.argv[1:] if argv is None else argv))
