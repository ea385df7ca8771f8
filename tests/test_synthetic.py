"""The synthetic FER-format data set: reproducible, well-formed, balanced, and learnable but not trivial."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import fer_lightning.data.synthetic as synthetic
from fer_lightning.data.splits import SplitArrays
from fer_lightning.data.synthetic import SyntheticSource, generate_faces
from fer_lightning.labels import EMOTIONS, IMAGE_SIZE
from fer_lightning.models.cnn3 import CNN3
from fer_lightning.models.linear import LogisticRegression


def test_same_seed_gives_identical_bytes_and_other_seeds_differ() -> None:
    a, b, c = generate_faces(300, seed=1), generate_faces(300, seed=1), generate_faces(300, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_shapes_dtypes_and_value_range() -> None:
    data = generate_faces(200, seed=0)
    assert isinstance(data, SplitArrays) and len(data) == 200
    assert data.images.shape == (200, IMAGE_SIZE, IMAGE_SIZE) and data.images.dtype == torch.uint8
    assert data.labels.shape == (200,) and data.labels.dtype == torch.int64
    assert 0 <= int(data.labels.min()) and int(data.labels.max()) < len(EMOTIONS)
    # Uses most of 0..255 overall, and individual images are not flat.
    assert int(data.images.min()) < 20 and int(data.images.max()) > 235
    assert data.images.float().std(dim=(1, 2)).min() > 10


def test_other_image_sizes() -> None:
    assert generate_faces(10, seed=0, image_size=32).images.shape == (10, 32, 32)


@pytest.mark.parametrize("n", [7, 700, 1003])
def test_classes_are_balanced(n: int) -> None:
    counts = torch.bincount(generate_faces(n, seed=3).labels, minlength=len(EMOTIONS))
    assert int(counts.max() - counts.min()) <= 1


def test_labels_are_shuffled() -> None:
    labels = generate_faces(70, seed=0).labels
    assert not torch.equal(labels, torch.arange(70) % len(EMOTIONS))


def test_features_never_leave_their_drawing_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks are only computed inside fixed boxes for speed; a feature crossing a box edge would be cut off."""
    boxed = generate_faces(1500, seed=4).images
    whole = (-synthetic._CANVAS, synthetic._CANVAS, -synthetic._CANVAS, synthetic._CANVAS)
    monkeypatch.setattr(synthetic, "_EYE_BOX", (0.0, *whole[1:]))
    monkeypatch.setattr(synthetic, "_MOUTH_BOX", whole)
    assert torch.equal(boxed, generate_faces(1500, seed=4).images)


def test_generator_leaves_thread_count_alone() -> None:
    before = torch.get_num_threads()
    generate_faces(10, seed=0)
    assert torch.get_num_threads() == before


def test_source_splits_sizes_and_distinct_seeds() -> None:
    splits = SyntheticSource(train_size=70, val_size=21, test_size=14, seed=5).load()
    assert {name: len(split) for name, split in splits.items()} == {"Training": 70, "PublicTest": 21, "PrivateTest": 14}
    train, val, test = splits["Training"], splits["PublicTest"], splits["PrivateTest"]
    # No image is shared between splits (byte-identical images would mean a reused seed).
    rows = {bytes(img.numpy()) for img in torch.cat([train.images, val.images, test.images])}
    assert len(rows) == 70 + 21 + 14
    again = SyntheticSource(train_size=70, val_size=21, test_size=14, seed=5).load()
    assert all(torch.equal(again[k].images, splits[k].images) for k in splits)
    other = SyntheticSource(train_size=70, val_size=21, test_size=14, seed=6).load()
    assert not torch.equal(other["Training"].images, train.images)


def _accuracy(model: nn.Module, train: SplitArrays, test: SplitArrays, epochs: int, batch_size: int = 64) -> float:
    """Adam(1e-3) on inputs x/255, as the framework trains, in plain PyTorch."""
    x_train, x_test = (s.images.float().div(255).unsqueeze(1) for s in (train, test))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train)).split(batch_size):
            loss = nn.functional.cross_entropy(model(x_train[idx]), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == test.labels).float().mean().item()


@pytest.mark.slow
def test_cnn_learns_it_and_pixel_logistic_regression_does_not() -> None:
    """Expression lives in local geometry under random pose: a small CNN picks it up within ~100 steps, while a
    linear model on raw pixels, trained longer, stays far behind (chance is 1/7).

    CNN3's batch-norm variant is used because the seed CNN needs about two 6,000-image epochs to leave chance, too
    slow for a unit test; scripted runs of the seed CNN on the default sizes reach ~88% vs ~35% for the linear model.
    Seeds 0-2 gave CNN 0.70-0.78 and linear 0.24-0.28 here; SYNTHETIC_TEST_SEED picks another seed.
    """
    seed = int(os.environ.get("SYNTHETIC_TEST_SEED", "0"))
    train, test = generate_faces(1500, seed=100 + seed), generate_faces(500, seed=200 + seed)
    torch.manual_seed(seed)
    cnn = _accuracy(CNN3(batch_norm=True), train, test, epochs=2, batch_size=32)
    torch.manual_seed(seed)
    linear = _accuracy(LogisticRegression(), train, test, epochs=10)
    assert cnn > 0.5, f"CNN3 reached only {cnn:.3f}"
    assert cnn > linear + 0.2, f"CNN3 {cnn:.3f} does not clearly beat logistic regression {linear:.3f}"
