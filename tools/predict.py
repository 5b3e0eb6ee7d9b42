#!/usr/bin/env python
"""Tiled inference over GeoTIFF scenes; the same as ``python -m cropseg.predict``.

    python tools/predict.py ckpt=model.ckpt input='rasters/*.tif' output=maps/ [key=value ...]

All options: conf/predict.yaml and docs/inference.md.
"""

import sys

from cropseg.predict import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
