"""cropseg: cropland maps from Landsat with deep semantic segmentation."""

__version__ = "0.1.0"
