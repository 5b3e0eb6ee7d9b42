"""Models: the LightningModule, losses, checkpoints and export."""
