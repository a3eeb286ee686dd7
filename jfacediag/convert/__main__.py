"""python -m jfacediag.convert: the same as tools/convert_weights.py."""
import sys

from jfacediag.convert.cli import main

sys.exit(main())
