"""fer-lightning: facial expression recognition on FER-2013 with Lightning and Hydra."""

__version__ = "0.1.0"
