"""Tiled, streaming inference: window grid and blending, GeoTIFF I/O, the predictor, mosaics."""
