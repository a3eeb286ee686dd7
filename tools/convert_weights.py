#!/usr/bin/env python
"""Converts PyTorch face-recognition checkpoints into jfacediag weights. `--help` lists the architectures.

  python tools/convert_weights.py --arch iresnet50 --src backbone.pth --out weights/iresnet50-ms1mv3 --verify
"""
import sys

from jfacediag.convert.cli import main

if __name__ == "__main__":
  sys.exit(main())
