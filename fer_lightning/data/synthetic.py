"""Procedurally drawn FER-format faces, so the framework trains and is tested with zero downloads.

Each image is a cartoon face drawn with batched tensor ops: identity (face shape, skin, hair, feature
placement), pose (rotation, shift, scale) and lighting (gradient, contrast, noise) vary freely, while the
expression label is carried only by facial geometry (mouth curvature/opening, eye opening, brow height/angle,
lip asymmetry). Expression intensity varies per sample and prototypes overlap, so a pixel-level linear model
does poorly while a small CNN learns it well: a useful, non-trivial sanity benchmark.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from fer_lightning.data.splits import SplitArrays
from fer_lightning.labels import EMOTIONS, IMAGE_SIZE
from fer_lightning.threads import torch_threads

Value = float | torch.Tensor  # a constant, or per-sample values shaped (n, 1, 1)

# Expression parameters, one row per EMOTIONS entry, in face units (the oval is ~1.3 wide; a 48-px crop spans ~1.7):
# mouth curve (+ = corners up), mouth opening, mouth width factor, eye opening factor, brow raise,
# brow tilt (+ = inner ends down, as in a frown), upper-lip asymmetry (one corner pulled up).
_PARAM_NAMES = ("curve", "open", "width", "eye", "raise", "tilt", "asym")
_PROTOTYPES = torch.tensor(
    [
        # curve  open   width  eye   raise  tilt   asym
        [-0.03, 0.00, 0.90, 0.85, -0.07, 0.10, 0.00],  # angry: brows down and in, tight mouth
        [-0.04, 0.02, 0.90, 0.55, -0.04, 0.04, 0.09],  # disgust: narrowed eyes, one side of lip raised
        [-0.03, 0.05, 1.00, 1.45, 0.07, -0.05, 0.00],  # fear: wide eyes, slightly open mouth, raised brows
        [0.12, 0.02, 1.20, 0.80, 0.02, 0.00, 0.00],  # happy: upturned wide mouth
        [-0.10, 0.00, 0.90, 0.75, 0.02, -0.08, 0.00],  # sad: downturned mouth, brows up in the middle
        [0.00, 0.13, 0.65, 1.55, 0.11, 0.00, 0.00],  # surprise: open round mouth, wide eyes, high brows
        [0.00, 0.00, 1.00, 1.00, 0.00, 0.00, 0.00],  # neutral
    ]
)
_NEUTRAL = _PROTOTYPES[EMOTIONS.index("neutral")]
# Per-parameter jitter added on top of the (intensity-scaled) prototype: it makes neighbouring classes overlap.
_JITTER = torch.tensor([0.023, 0.010, 0.08, 0.10, 0.023, 0.023, 0.013])
_INTENSITY = (0.4, 1.2)  # per-sample expression strength, as a fraction of the prototype's offset from neutral
_BROW, _LIP = 0.04, 0.045  # half-thickness of brows and lips
_SCALE = (1.05, 1.3)  # zoom range of the pose; above 1 the face fills the crop, as in FER-2013
_SHIFT, _ROTATION = 0.2, 0.3  # pose: max shift (image half-widths) and max in-plane rotation (radians)
_EDGE = 0.04  # soft-edge width in face units (about a pixel), so shapes are anti-aliased
_CANVAS = 1.25  # faces are drawn on [-1.25, 1.25]^2 so pose resampling never reads past the canvas edge
_CHUNK = 512  # images drawn per vectorised step: amortises per-op overhead while staying cache-friendly
# Face-space boxes (x0, x1, y0, y1) that always contain a feature: masks are computed only there, which is
# most of the speed. Jitter is clamped to +-2.5 sigma so no feature can leave its box (a test checks this).
_EYE_BOX = (0.0, 0.65, -0.8, 0.2)  # right eye and brow; mirrored for the left one
_MOUTH_BOX = (-0.55, 0.55, -0.05, 0.95)  # nose and mouth


def _soft(signed_distance: torch.Tensor) -> torch.Tensor:
    """Coverage in [0, 1] of a shape given an (approximate) signed distance, negative inside; a linear ramp."""
    return (0.5 - signed_distance / _EDGE).clamp_(0, 1)


def _ellipse(x: torch.Tensor, y: torch.Tensor, cx: Value, cy: Value, a: Value, b: Value) -> torch.Tensor:
    """Soft axis-aligned ellipse. ``x`` is (n, 1, W) and ``y`` (n, H, 1), so only the sum is full size.

    (r^2 - 1) / 2 stands in for r - 1 (equal to first order at the boundary, where it matters): no sqrt.
    """
    r2 = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2
    return _soft((r2 - 1) * (0.5 * torch.minimum(torch.as_tensor(a), torch.as_tensor(b))))


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """(n, 1, 1) uniform draws, shaped to broadcast against (n, H, W) images."""
    return (low + (high - low) * torch.rand(n, generator=gen)).view(n, 1, 1)


def _box(grid: torch.Tensor, box: tuple[float, float, float, float]) -> tuple[slice, slice]:
    """Row and column slices of the canvas covering a face-space box."""
    cols = (grid >= box[0]).nonzero()[0, 0], (grid <= box[1]).nonzero()[-1, 0] + 1
    rows = (grid >= box[2]).nonzero()[0, 0], (grid <= box[3]).nonzero()[-1, 0] + 1
    return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))


def _draw(labels: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """Draw one chunk of faces as float images in [0, 1], shape (n, size, size).

    Faces are drawn upright on a canvas whose x and y coordinates stay separable (cheap broadcasting),
    then pose (rotation, scale, shift) is applied with a single ``grid_sample``.
    """
    n = labels.shape[0]
    u = _uniform  # short alias: every draw below is (n, 1, 1)

    # Expression: neutral + intensity * (prototype - neutral) + jitter. Low intensities blur into neutral.
    intensity = _INTENSITY[0] + (_INTENSITY[1] - _INTENSITY[0]) * torch.rand(n, 1, generator=gen)
    jitter = _JITTER * torch.randn(n, 7, generator=gen).clamp(-2.5, 2.5)
    expr = _NEUTRAL + intensity * (_PROTOTYPES[labels] - _NEUTRAL) + jitter
    curve, open_, width, eye, raise_, tilt, asym = (expr[:, i].view(n, 1, 1) for i in range(len(_PARAM_NAMES)))
    open_, width, eye = open_.clamp(min=0), width.clamp(min=0.4), eye.clamp(min=0.25)
    asym = asym * torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, -1.0, 1.0)  # either side

    canvas = round(size * _CANVAS)
    grid = torch.linspace(-_CANVAS, _CANVAS, canvas)
    x, y = grid.view(1, 1, canvas), grid.view(1, canvas, 1)

    # Identity: face shape, tones, hair, feature placement.
    face_a, face_b = u(gen, n, 0.55, 0.7), u(gen, n, 0.72, 0.88)
    skin, hair_tone = u(gen, n, 0.45, 0.8), u(gen, n, 0.05, 0.35)
    img = u(gen, n, 0.1, 0.9).repeat(1, canvas, canvas)  # background
    hairline = u(gen, n, -0.65, -0.4)
    face = _ellipse(x, y, 0.0, 0.05, face_a, face_b)
    img.lerp_(hair_tone, _ellipse(x, y, 0.0, -0.05, face_a + 0.08, face_b + 0.06) * _soft(y - hairline - 0.25))
    img.lerp_(skin, face)
    img.lerp_(hair_tone, face * _soft(y - hairline))  # fringe

    eye_x, eye_y = u(gen, n, 0.2, 0.28), u(gen, n, -0.18, -0.06)
    eye_w, eye_h = u(gen, n, 0.09, 0.12), u(gen, n, 0.045, 0.065) * eye
    brow_len, brow_gap = u(gen, n, 0.11, 0.15), u(gen, n, 0.13, 0.17)
    mouth_y, mouth_w = u(gen, n, 0.38, 0.5), u(gen, n, 0.2, 0.26) * width
    dark = skin * u(gen, n, 0.2, 0.45)  # tone of brows, lids and lips

    rows, cols = _box(grid, _EYE_BOX)
    for side in (-1.0, 1.0):  # eyes and brows, mirrored
        sx = cols if side > 0 else slice(canvas - cols.stop, canvas - cols.start)
        px, py, region = x[..., sx], y[:, rows], img[:, rows, sx]
        cx = side * eye_x
        region.lerp_(dark, _ellipse(px, py, cx, eye_y, eye_w + 0.025, eye_h + 0.025))  # lids
        sclera = _ellipse(px, py, cx, eye_y, eye_w, eye_h)
        region.lerp_(torch.tensor(0.9), sclera)
        region.lerp_(torch.tensor(0.12), _ellipse(px, py, cx, eye_y, 0.05, 0.05) * sclera)  # iris
        # Brow: a straight bar whose inner end drops by `tilt` (frown) and whose height rises by `raise_`.
        bx = cx + side * (brow_len - 0.03)  # bar centre, slightly outboard of the eye
        s = (px - bx) * side / brow_len  # -1 at the inner end, +1 at the outer end
        centre = eye_y - brow_gap - raise_ + tilt * (0.3 - 0.7 * s)
        region.lerp_(dark, _soft((py - centre).abs() - _BROW) * _soft((s.abs() - 1) * brow_len))

    rows, cols = _box(grid, _MOUTH_BOX)
    px, py, region = x[..., cols], y[:, rows], img[:, rows, cols]
    nose = _ellipse(px, py, -0.05, 0.2, 0.03, 0.025) + _ellipse(px, py, 0.05, 0.2, 0.03, 0.025)
    region.lerp_(skin * 0.55, nose.clamp_(max=1))
    # Mouth: a parabolic centre line with a lip band around it and a dark opening inside.
    t = px / mouth_w
    centre = mouth_y + curve * (0.5 - t**2) - asym * (t + 1) / 2
    span = torch.sqrt((1 - t**2).clamp(min=0))
    gap_down = span * open_
    gap_up = gap_down + span * asym.abs() * (t * asym.sign() + 1) / 2  # upper lip raised on one side
    ends = _soft((t.abs() - 1) * mouth_w)
    inside = torch.maximum(centre - py - gap_up, py - centre - gap_down)
    region.lerp_(dark, _soft(inside - _LIP) * ends)  # lips
    region.lerp_(torch.tensor(0.05), _soft(inside) * ends)  # opening (a thin dark line when closed)

    # Pose: rotate, scale and shift the upright face. theta maps output coords to normalised canvas coords.
    angle, scale = u(gen, n, -_ROTATION, _ROTATION).view(n), u(gen, n, *_SCALE).view(n)
    shift = _SHIFT * (2 * torch.rand(n, 2, generator=gen) - 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / (scale * _CANVAS).view(n, 1, 1)
    theta = torch.cat([rot, -(rot @ shift.unsqueeze(-1))], -1)
    sample_grid = F.affine_grid(theta, [n, 1, size, size], align_corners=True)
    img = F.grid_sample(img.unsqueeze(1), sample_grid, align_corners=True, padding_mode="border").squeeze(1)

    # Lighting: a directional gradient, a random contrast/brightness and sensor noise.
    out = torch.linspace(-1, 1, size)
    direction = u(gen, n, 0, 2 * torch.pi)
    ramp = torch.cos(direction) * out.view(1, 1, size) + torch.sin(direction) * out.view(1, size, 1)
    img = img * (1 + u(gen, n, 0.0, 0.45) * ramp)
    img = (img - 0.5) * u(gen, n, 0.7, 1.25) + 0.5 + u(gen, n, -0.1, 0.1)
    img = img + u(gen, n, 0.01, 0.05) * torch.randn(n, size, size, generator=gen)
    return img.clamp_(0, 1)


def generate_faces(num_samples: int, seed: int, image_size: int = IMAGE_SIZE) -> SplitArrays:
    """Draw ``num_samples`` faces with balanced labels (counts differ by at most one), deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(num_samples) % len(EMOTIONS))[torch.randperm(num_samples, generator=gen)]
    images = torch.empty(num_samples, image_size, image_size, dtype=torch.uint8)
    # One thread: the many small elementwise ops here gain nothing from intra-op threads, and on a busy machine
    # every op then waits for a descheduled worker (measured 5-10x slower on 2 shared cores).
    with torch_threads(1):
        for start in range(0, num_samples, _CHUNK):
            chunk = _draw(labels[start : start + _CHUNK], gen, image_size)
            images[start : start + _CHUNK] = (chunk * 255).round_().to(torch.uint8)
    return SplitArrays(images, labels.to(torch.int64))


def _derive_seed(seed: int, split: str) -> int:
    """A stable per-split seed, so splits never share images (and no split equals another seed's split)."""
    digest = hashlib.sha256(f"fer-synthetic/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SyntheticSource:
    """Hydra-instantiated stand-in for FER-2013; ``load()`` returns the three FER-2013 usages."""

    class_names = EMOTIONS
    label_mode = "majority"

    def __init__(self, train_size: int = 6000, val_size: int = 1000, test_size: int = 1000, seed: int = 0) -> None:
        self.sizes = {"Training": train_size, "PublicTest": val_size, "PrivateTest": test_size}
        self.seed = seed

    def load(self) -> dict[str, SplitArrays]:
        return {split: generate_faces(size, _derive_seed(self.seed, split)) for split, size in self.sizes.items()}
