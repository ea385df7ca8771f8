"""Training logic: the LightningModule, LR schedules, callbacks, W&B reports and run status files."""
