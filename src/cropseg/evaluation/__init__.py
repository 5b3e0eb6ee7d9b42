"""Evaluation of cropland maps: accuracy at points, agreement, area per region and year, clustering."""
