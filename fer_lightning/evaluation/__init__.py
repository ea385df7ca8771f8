"""Scoring predictions: metrics, reports, calibration and test-time augmentation."""
