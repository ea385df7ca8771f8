"""One emotion vocabulary across datasets, and a model scored on data labelled with other classes (issue 34)."""

from __future__ import annotations

import pytest
import torch

from fer_lightning.evaluate import evaluate
from fer_lightning.evaluation.vocabulary import restrict, shared_classes
from fer_lightning.labels import EMOTIONS, FERPLUS_EMOTIONS, canonical
from tests.conftest import TINY_DATA, compose_config

CKPLUS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # the CK+48 folder names


def test_every_dataset_name_maps_onto_the_shared_vocabulary():
    assert [canonical(n) for n in EMOTIONS] == [
        "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"
    ]  # fmt: skip
    assert canonical(" Happy ") == "happiness" and canonical("contempt") == "contempt"
    with pytest.raises(ValueError, match="'bored' is no emotion of the shared vocabulary"):
        canonical("bored")


def test_what_each_side_lacks_is_named():
    ferplus_on_fer2013 = shared_classes(FERPLUS_EMOTIONS, EMOTIONS)
    assert ferplus_on_fer2013.names == EMOTIONS and ferplus_on_fer2013.model_lacks == ()
    assert ferplus_on_fer2013.data_lacks == ("contempt",)
    assert [FERPLUS_EMOTIONS[j] for j in ferplus_on_fer2013.model_index] == [
        "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"
    ]  # fmt: skip
    fer2013_on_ckplus = shared_classes(EMOTIONS, CKPLUS)
    assert fer2013_on_ckplus.model_lacks == ("contempt",) and fer2013_on_ckplus.data_lacks == ("neutral",)
    assert shared_classes(EMOTIONS, EMOTIONS).identical and not fer2013_on_ckplus.identical


def test_faces_of_a_class_the_model_lacks_are_left_out_and_the_rest_renormalised():
    shared = shared_classes(("happy", "sad", "neutral"), ("sadness", "contempt", "happiness"))
    labels = torch.tensor([0, 1, 2, 2])
    probs = torch.tensor([[0.2, 0.6, 0.2], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    keep, new_labels, kept = restrict(shared, labels, probs)
    assert keep.tolist() == [True, False, True, True]  # the contempt face: the model cannot predict it
    assert new_labels.tolist() == [0, 1, 1] and shared.names == ("sadness", "happiness")
    # Columns in the data's order (sad, happy), the model's neutral dropped, each row summing to 1.
    torch.testing.assert_close(kept, torch.tensor([[0.75, 0.25], [1 / 6, 5 / 6], [0.5, 0.5]]))


def test_no_emotion_in_common_is_an_error():
    with pytest.raises(ValueError, match="no emotion in common"):
        shared_classes(("happy",), ("sadness",))


def test_the_shipped_ferplus_model_is_scored_on_fer2013_classes(tmp_path):
    cfg = compose_config([*TINY_DATA, "pretrained=ferplus"], tmp_path / "eval", config_name="eval")
    metrics = evaluate(cfg)
    assert metrics["classes_the_data_lacks"] == ["contempt"] and metrics["classes_the_model_lacks"] == []
    assert metrics["scored_classes"] == list(EMOTIONS) and metrics["num_samples"] == 112
    assert "test/f1/angry" in metrics and "test/f1/contempt" not in metrics
