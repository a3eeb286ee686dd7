"""python -m jfacediag.align: see jfacediag/align/cli.py."""
import sys

from jfacediag.align.cli import main

sys.exit(main())
