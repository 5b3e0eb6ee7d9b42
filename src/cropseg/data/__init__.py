"""Training data: patch files, their index, sampling, transforms and the DataModule."""
