"""Class names of each dataset and the image size: what a model's outputs mean, importable without torch."""

from __future__ import annotations

IMAGE_SIZE = 48  # FER-2013 and FER+ faces are 48x48 grayscale

# FER-2013 label order; every reader, model head and report uses these indices.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER+ label order (the column order of fer2013new.csv); index i of a FER+ model's output is FERPLUS_EMOTIONS[i].
FERPLUS_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
