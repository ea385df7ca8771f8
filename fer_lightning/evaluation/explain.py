"""``python -m fer_lightning.evaluate ... explain=true``: a grid of test faces with their heat maps.

One row per true class: the ``per_class`` faces of that class classified correctly with the highest
confidence, then the ``per_class`` misclassified with the highest confidence in the wrong class (the
instructive mistakes), each with the heat map of the class it was given (see ``fer_lightning.deploy.explain``).
An ensemble's map is the mean of its members' maps. Grad-CAM where the networks have a convolution, occlusion
otherwise; the heat maps are of the plain image, without test-time augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from fer_lightning.deploy.checkpoint import RawPixelClassifier
from fer_lightning.deploy.explain import last_conv, occlusion, overlay, raw_pixel_grad_cam


def ensemble_heat_maps(
    models: Sequence[torch.nn.Module], input_sizes: Sequence[int], faces: np.ndarray, targets: Sequence[int]
) -> tuple[np.ndarray, str]:
    """Mean heat map over the members for uint8 faces (N, 48, 48), and the method used."""
    wrappers = [RawPixelClassifier(model, size).eval() for model, size in zip(models, input_sizes)]
    gradcam = all(last_conv(model) is not None for model in models)
    maps = []
    for wrapper in wrappers:
        if gradcam:
            maps.append(raw_pixel_grad_cam(wrapper, faces, targets))
        else:
            device = next((p.device for p in wrapper.parameters()), torch.device("cpu"))  # ONNX: no parameters

            def classify(batch: np.ndarray, wrapper: torch.nn.Module = wrapper, device=device) -> np.ndarray:
                with torch.inference_mode():
                    return wrapper(torch.from_numpy(batch).to(device)).cpu().numpy()

            maps.append(occlusion(classify, faces, targets))
    return np.mean(maps, axis=0), "Grad-CAM" if gradcam else "occlusion"


def pick_examples(labels: np.ndarray, probs: np.ndarray, per_class: int) -> list[tuple[list[int], list[int]]]:
    """Per class: (most confident correct, most confident wrong) indices, at most ``per_class`` of each."""
    predicted, confidence = probs.argmax(1), probs.max(1)

    def most_confident(index: np.ndarray) -> list[int]:
        return index[np.argsort(-confidence[index], kind="stable")][:per_class].tolist()

    chosen = []
    for c in range(probs.shape[1]):
        right = np.flatnonzero((labels == c) & (predicted == c))
        wrong = np.flatnonzero((labels == c) & (predicted != c))
        chosen.append((most_confident(right), most_confident(wrong)))
    return chosen


def write_explanations(
    models: Sequence[torch.nn.Module],
    input_sizes: Sequence[int],
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    path: str | Path,
    per_class: int = 4,
) -> Path:
    """Write the grid (rows: true classes; columns: ``per_class`` right, then ``per_class`` wrong) to ``path``."""
    labels_np, probs_np = labels.cpu().numpy(), probs.float().cpu().numpy()
    chosen = pick_examples(labels_np, probs_np, per_class)
    index = [i for right, wrong in chosen for i in right + wrong]
    faces = images[index].cpu().numpy().astype(np.uint8) if index else np.empty((0, 48, 48), np.uint8)
    targets = probs_np[index].argmax(1).tolist() if index else []
    maps, method = ensemble_heat_maps(models, input_sizes, faces, targets) if index else (faces, "Grad-CAM")
    heat = dict(zip(index, maps))

    rows, cols = len(class_names), 2 * per_class
    fig = Figure(figsize=(cols * 1.15 + 0.6, rows * 1.3 + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, (name, (right, wrong)) in enumerate(zip(class_names, chosen)):
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            slot = right[col] if col < per_class and col < len(right) else None
            if col >= per_class and col - per_class < len(wrong):
                slot = wrong[col - per_class]
            if slot is None:
                continue
            given = int(probs_np[slot].argmax())
            ax.imshow(overlay(images[slot].cpu().numpy().astype(np.uint8), heat[slot], size=96))
            ok = given == labels_np[slot]
            ax.set_title(
                f"{'' if ok else '-> '}{class_names[given]} {probs_np[slot, given]:.2f}",
                fontsize=7,
                color="darkgreen" if ok else "firebrick",
            )
        axes[row][0].set_ylabel(name, fontsize=8)
    fig.suptitle(
        f"{method} heat maps of the class given. Left: correct (most confident first); right: wrong", fontsize=8
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
