"""The demo's data: scikit-learn's bundled handwritten digits (no download), a
stratified held-out split, and an out-of-distribution set of shifted digits.

Images are 8x8 grey levels 0..16, scaled to [0, 1] and flattened to 64 features.
The OOD set is built from the *held-out* images only (nobody trained on them),
in two kinds of equal size. A stratified split gives train / validation / test
(55 / 10 / 35 %); the validation part is used only to tune the Laplace prior.
The OOD set has two kinds of equal size:

* ``rotated``: each image turned by an angle drawn uniformly from
  ±[60°, 120°] about the image centre (bilinear, zero padding);
* ``noisy``:   each image plus Gaussian pixel noise of standard deviation
  ``noise_std`` (default 0.5, i.e. half the pixel range), clipped to [0, 1].

Everything is drawn from a NumPy generator seeded by ``seed``: same seed, same
split and same OOD set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DigitsData", "load_digits", "rotate_images"]

SIDE = 8


@dataclass
class DigitsData:
    """Tensors on ``device``: features float32 ``[n, 64]`` in [0, 1], labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor             # validation: only for tuning the Laplace prior precision
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_ood: torch.Tensor            # rotated then noisy, each built from the test images
    ood_kind: np.ndarray            # "rotated" / "noisy" per OOD row
    ood_angles: np.ndarray          # degrees, per rotated row
    n_classes: int = 10

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def summary(self) -> str:
        n_rot = int((self.ood_kind == "rotated").sum())
        n_noise = int((self.ood_kind == "noisy").sum())
        return (f"digits: {self.num_train} train / {self.x_val.shape[0]} validation / {self.x_test.shape[0]} "
                f"held-out test images (8x8, 10 classes); "
                f"OOD: {n_rot} rotated + {n_noise} noise-corrupted held-out images")


def rotate_images(images: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotate ``[n, H, W]`` images by ``angles_deg`` (counter-clockwise) about their
    centre, bilinear interpolation, zero outside the image."""
    n, h, w = images.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    out = np.empty_like(images, dtype=np.float64)
    for i in range(n):
        a = math.radians(float(angles_deg[i]))
        c, s = math.cos(a), math.sin(a)
        # inverse map: where in the source does output pixel (y, x) come from
        dy, dx = yy - cy, xx - cx
        sy = c * dy + s * dx + cy
        sx = -s * dy + c * dx + cx
        y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
        fy, fx = sy - y0, sx - x0
        img = np.pad(images[i].astype(np.float64), 1)  # zero border; indices shift by 1

        def at(yi, xi):
            yi = np.clip(yi + 1, 0, h + 1)
            xi = np.clip(xi + 1, 0, w + 1)
            return img[yi, xi]

        inside = (sy > -1) & (sy < h) & (sx > -1) & (sx < w)
        v = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
             + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
        out[i] = np.where(inside, v, 0.0)
    return out


def _stratified_split(y: np.ndarray, fractions, rng: np.random.Generator):
    """Per class, the first ``fractions[0]`` of a shuffled index list, then the
    next ``fractions[1]``, ...; the remainder is the first (training) part."""
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        start = 0
        for k, f in enumerate(fractions):
            n = int(round(f * idx.size))
            parts[k + 1].append(idx[start:start + n])
            start += n
        parts[0].append(idx[start:])
    out = []
    for p in parts:
        p = np.concatenate(p)
        rng.shuffle(p)
        out.append(p)
    return out


def load_digits(seed: int = 0, *, val_fraction: float = 0.1, test_fraction: float = 0.35,
                noise_std: float = 0.5, device="cpu") -> DigitsData:
    """Load, split and shift the digits (see the module docstring)."""
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the demo needs scikit-learn (its bundled digits data set): "
                          "pip install -e \".[demo]\"  (or pip install scikit-learn)") from e
    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float64) / 16.0       # [1797, 8, 8] in [0, 1]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, val_idx, test_idx = _stratified_split(labels, (val_fraction, test_fraction), rng)

    test_images = images[test_idx]
    n_test = test_images.shape[0]
    angles = rng.uniform(60.0, 120.0, n_test) * rng.choice([-1.0, 1.0], n_test)
    rotated = rotate_images(test_images, angles)
    noisy = np.clip(test_images + noise_std * rng.standard_normal(test_images.shape), 0.0, 1.0)
    ood = np.concatenate([rotated, noisy]).reshape(2 * n_test, SIDE * SIDE)
    kind = np.array(["rotated"] * n_test + ["noisy"] * n_test)

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    flat = images.reshape(-1, SIDE * SIDE)
    return DigitsData(
        x_train=t(flat[train_idx]), y_train=t(labels[train_idx], torch.int64),
        x_val=t(flat[val_idx]), y_val=t(labels[val_idx], torch.int64),
        x_test=t(flat[test_idx]), y_test=t(labels[test_idx], torch.int64),
        x_ood=t(ood), ood_kind=kind, ood_angles=np.concatenate([angles, np.full(n_test, np.nan)]),
    )
