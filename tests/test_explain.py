"""Heat maps: Grad-CAM and occlusion point at what drives a class (a hand-built model whose classes are
horizontal and vertical bars), follow a crop-trained model's geometry, and reach fer-predict and evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fer_lightning.deploy import EmotionRecognizer
from fer_lightning.deploy.checkpoint import RawPixelClassifier
from fer_lightning.deploy.explain import (
    Explainer,
    feature_layer,
    grad_cam,
    last_conv,
    occlusion,
    overlay,
    raw_pixel_grad_cam,
)
from fer_lightning.evaluate import evaluate
from fer_lightning.evaluation.explain import pick_examples
from fer_lightning.predict import main as predict_main
from tests.conftest import TINY_DATA, compose_config
from tests.helpers.deploy import GRACE_HOPPER, tiny_checkpoint, tiny_onnx

# Where the bars are, in pixels of a 48x48 face: the horizontal one low on the left, the vertical one high on
# the right, so that a map transposed or flipped, or taken for the wrong class, points at the other bar.
HORIZONTAL = (slice(35, 38), slice(6, 22))  # rows, columns
VERTICAL = (slice(6, 22), slice(35, 38))


def bars_net() -> nn.Module:
    """Logit 0 = mean response of a horizontal-line detector, logit 1 = of a vertical one (zero-sum 5x5 kernels:
    nothing on flat areas, nothing from the other orientation)."""
    conv = nn.Conv2d(1, 2, 5, padding=2, bias=False)
    horizontal = torch.full((5, 5), -1 / 20)
    horizontal[2] = 1 / 5
    with torch.no_grad():
        conv.weight.copy_(torch.stack([horizontal, horizontal.T])[:, None])
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2) * 0.05)
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def bars_face() -> np.ndarray:
    face = np.zeros((48, 48), np.uint8)  # dark, as the conv's zero padding: no edge at the border
    face[HORIZONTAL] = 240
    face[VERTICAL] = 240
    return face


def peak(heat: np.ndarray) -> tuple[int, int]:
    return np.unravel_index(int(np.argmax(heat)), heat.shape)


def inside(point: tuple[int, int], region: tuple[slice, slice], slack: int = 2) -> bool:
    (y, x), (rows, cols) = point, region
    return rows.start - slack <= y < rows.stop + slack and cols.start - slack <= x < cols.stop + slack


def share(heat: np.ndarray, region: tuple[slice, slice], slack: int = 3) -> float:
    rows, cols = region
    grown = heat[max(0, rows.start - slack) : rows.stop + slack, max(0, cols.start - slack) : cols.stop + slack]
    return float(grown.sum() / heat.sum())


def test_grad_cam_points_at_the_bar_that_drives_each_class():
    net, face = bars_net(), bars_face()
    images = torch.from_numpy(np.stack([face, face])).float()[:, None]
    maps = grad_cam(net, images, targets=[0, 1])
    assert maps.shape == (2, 48, 48) and maps.max() == pytest.approx(1.0) and maps.min() >= 0
    assert inside(peak(maps[0]), HORIZONTAL) and inside(peak(maps[1]), VERTICAL)
    assert share(maps[0], HORIZONTAL) > 0.8 and share(maps[1], VERTICAL) > 0.8
    assert share(maps[0], VERTICAL) < 0.25 and share(maps[1], HORIZONTAL) < 0.25  # only the other bar's tips


def test_occlusion_points_at_the_same_bars_from_outputs_alone():
    net, face = bars_net(), bars_face()

    def classify(faces: np.ndarray) -> np.ndarray:  # what an ONNX model offers: uint8 faces in, probabilities out
        with torch.no_grad():
            return net(torch.from_numpy(faces).float()[:, None]).softmax(-1).numpy()

    maps = occlusion(classify, np.stack([face, face]), targets=[0, 1])
    assert maps.shape == (2, 48, 48) and maps.max() == pytest.approx(1.0)
    assert inside(peak(maps[0]), HORIZONTAL, slack=4) and inside(peak(maps[1]), VERTICAL, slack=4)
    assert share(maps[0], HORIZONTAL, slack=7) > 0.7 and share(maps[1], VERTICAL, slack=7) > 0.7


def test_a_crop_trained_models_map_is_placed_on_its_centre_crop():
    face = bars_face()
    wrapper = RawPixelClassifier(bars_net(), input_size=40)  # sees face[4:44, 4:44]
    maps = raw_pixel_grad_cam(wrapper, face[None], targets=[0])
    assert maps.shape == (1, 48, 48)
    assert maps[0, :4].max() == maps[0, 44:].max() == maps[0, :, :4].max() == maps[0, :, 44:].max() == 0
    assert inside(peak(maps[0]), HORIZONTAL)  # in face coordinates, not the crop's


def test_grad_cam_matches_its_definition_on_a_random_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),  # the last conv, then an in-place op on its output
        nn.Flatten(), nn.Linear(6 * 24 * 24, 7),
    ).eval()  # fmt: skip
    x = torch.rand(3, 1, 48, 48) * 255
    targets = [0, 4, 6]
    activations = net[:5](x).detach().requires_grad_(True)  # the last feature map: after the last ReLU
    logits = net[5:](activations.clone())
    (gradients,) = torch.autograd.grad(logits[range(3), targets].sum(), activations)
    cam = torch.relu((gradients.mean((2, 3), keepdim=True) * activations).sum(1, keepdim=True)).detach()
    cam = nn.functional.interpolate(cam, size=(48, 48), mode="bilinear", align_corners=False)[:, 0]
    expected = (cam / cam.flatten(1).amax(1)[:, None, None]).numpy()
    assert np.allclose(grad_cam(net, x, targets, batch_size=2), expected, atol=1e-5)


def test_a_resnets_feature_map_is_its_last_block_not_the_shortcut_conv():
    from fer_lightning.models.compact import CompactResNet

    net = CompactResNet().eval()
    x = torch.rand(1, 1, 48, 48) * 255
    last_block = net.stages[-1][-1]
    assert last_block.downsample is not None and last_conv(net) is last_block.downsample[0]  # the 1x1 shortcut
    layer = feature_layer(net, x)
    outputs = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out, key=key: outputs.setdefault(key, out))
        for key, module in [("layer", layer), ("block", last_block)]
    ]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    assert outputs["layer"].shape == (1, 256, 3, 3) and torch.equal(outputs["layer"], outputs["block"])
    assert grad_cam(net, x, [3]).shape == (1, 48, 48)


def test_pick_examples_most_confident_right_and_wrong_per_class():
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05]])
    assert pick_examples(labels, probs, per_class=1) == [([0], [2]), ([3], [4])]
    assert pick_examples(labels, probs, per_class=3)[0] == ([0, 1], [2])


def test_overlay_is_rgb_and_reddest_where_the_heat_is():
    heat = np.zeros((48, 48), np.float32)
    heat[:8, :8] = 1
    picture = overlay(np.full((48, 48), 128, np.uint8), heat, size=96)
    assert picture.shape == (96, 96, 3) and picture.dtype == np.uint8
    assert picture[4, 4, 0] > picture[90, 90, 0] and picture[90, 90, 2] > picture[4, 4, 2]


def test_explainer_method_follows_the_model(tmp_path_factory):
    onnx = EmotionRecognizer.from_onnx(tiny_onnx(tmp_path_factory), detector="none")
    assert Explainer(onnx).method == "occlusion"
    with pytest.raises(ValueError, match="Grad-CAM needs a PyTorch checkpoint"):
        Explainer(onnx, "gradcam")
    ckpt = EmotionRecognizer.from_checkpoint(tiny_checkpoint(tmp_path_factory), device="cpu", detector="none")
    explainer = Explainer(ckpt)
    assert explainer.method == "gradcam"
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    maps = explainer(faces, [0, 3, 6])
    assert maps.shape == (3, 48, 48) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("model", ["ckpt", "onnx"])
def test_fer_predict_explain_writes_each_face_with_its_heat_map(model, tmp_path, tmp_path_factory):
    flag = ["--ckpt", str(tiny_checkpoint(tmp_path_factory))] if model == "ckpt" else []
    flag = flag or ["--model", str(tiny_onnx(tmp_path_factory))]
    out = tmp_path / "explain"
    records = tmp_path / "faces.jsonl"
    assert predict_main([str(GRACE_HOPPER), *flag, "--explain", str(out), "--output", str(records)]) == 0
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["grace_hopper_face0.png"]
    with Image.open(written[0]) as card:
        assert card.size == (384, 212) and card.mode == "RGB"
        pixels = np.asarray(card)
    assert pixels[:192, :192].std(axis=2).max() < 1  # the face: gray
    assert pixels[:192, 192:].std(axis=2).mean() > 5  # its heat map: coloured


def test_evaluate_explain_writes_a_grid(tmp_path, tmp_path_factory):
    small = [*TINY_DATA, "data.source.train_size=7", "data.source.val_size=7", "data.source.test_size=35"]
    overrides = [f"ckpt_path={tiny_checkpoint(tmp_path_factory)}", "explain=true", "explain_per_class=2"]
    evaluate(compose_config([*small, *overrides], tmp_path / "eval", config_name="eval"))
    with Image.open(tmp_path / "eval" / "explanations.png") as grid:
        assert grid.width > 300 and grid.height > 500
