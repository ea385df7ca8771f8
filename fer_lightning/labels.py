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

# One vocabulary across datasets, FER+'s names: every dataset's class names map onto it (``canonical``), so that a
# model trained on one dataset is scored on another over the classes both have.
CANONICAL: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
ALIASES: dict[str, str] = {
    "happy": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}


def canonical(name: str) -> str:
    """``name``'s emotion in the shared vocabulary: ``happy`` -> ``happiness``; case and spaces do not count."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CANONICAL:
        raise ValueError(
            f"{name!r} is no emotion of the shared vocabulary ({', '.join(CANONICAL)}) nor one of its aliases "
            f"({', '.join(ALIASES)})"
        )
    return key
