"""Plain ``nn.Module`` classifiers, one file per family; each returns logits for 7 classes."""
