"""Synthetic "shapes" images with ground-truth object masks, and the shortcut ("cheat") variant.

Every image shows one filled shape (the class) of a random colour, size, position and rotation on a
textured, noisy background, with a few distractors (small blobs and thin line segments) that are not
any class shape. The mask of each image is exactly the pixels of the class shape, so a heatmap's
correctness can be measured (pointing game, mass inside the mask).

Drawing is vectorised over chunks of images with numpy coordinate grids. Each chunk has its own
random generator seeded from ``(seed, size, chunk index)``, so output never depends on global RNG
state, and the first ``k`` images of ``shapes_dataset(n, seed)`` equal ``shapes_dataset(k, seed)``.
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")

CHEAT_CLASS: int = CLASSES.index("square")
"""Index of the class that carries the corner mark in the cheat variant."""

_CHUNK = 256  # images drawn per vectorised step (fixed: it is part of the seeding scheme)
_REF = 64.0  # geometry below is given in pixels of a 64×64 image and scaled to ``size``
_R_MIN, _R_MAX = 9.0, 20.0  # object circumradius
_MARK_OFFSET, _MARK_SIDE, _MARK_MARGIN = 3.0, 6.0, 2.0
_MAX_DISTRACTORS = 4
_MIN_CONTRAST = 0.4  # least L∞ distance between object colour and background base colour


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _mark_geometry(size: int) -> tuple[int, int]:
    """Top-left offset and side (even, so it splits into a 2×2 checker) of the mark, in pixels."""
    scale = size / _REF
    side = max(2, 2 * round(_MARK_SIDE * scale / 2))
    offset = max(1, round(_MARK_OFFSET * scale))
    return offset, side


def _mark_pattern(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The mark's boolean footprint ``(size, size)`` and its greyscale value per pixel (0 or 1)."""
    offset, side = _mark_geometry(size)
    footprint = np.zeros((size, size), dtype=bool)
    footprint[offset : offset + side, offset : offset + side] = True
    ys, xs = np.mgrid[0:size, 0:size]
    half = side // 2
    checker = (((ys - offset) // half + (xs - offset) // half) % 2 == 0).astype(np.float32)
    return footprint, checker


def mark_mask(size: int = 64) -> torch.Tensor:
    """The pixels of the cheat mark (a 2×2 black/white checker near the top-left corner) as a
    ``(size, size)`` bool tensor; cheat-variant images of :data:`CHEAT_CLASS` carry it."""
    size = _check_int("size", size, 16)
    return torch.from_numpy(_mark_pattern(size)[0])


def _shape_masks(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-tests in the object's unit frame (circumradius 1) for each image's shape class."""
    inside = np.zeros(u.shape, dtype=bool)
    for cls in range(len(CLASSES)):
        sel = shape == cls
        if not sel.any():
            continue
        uu, vv = u[sel], v[sel]
        name = CLASSES[cls]
        if name == "circle":
            m = uu * uu + vv * vv <= 0.9**2
        elif name == "square":
            m = np.maximum(np.abs(uu), np.abs(vv)) <= 0.7
        elif name == "triangle":  # equilateral, circumradius 1 → inradius 0.5
            m = np.ones(uu.shape, dtype=bool)
            for k in range(3):
                a = np.pi / 2 + 2 * np.pi * k / 3
                m &= uu * np.cos(a) + vv * np.sin(a) <= 0.5
        elif name == "cross":
            au, av = np.abs(uu), np.abs(vv)
            m = ((au <= 0.95) & (av <= 0.28)) | ((av <= 0.95) & (au <= 0.28))
        else:  # star: five points, outer radius 1, inner radius 0.42; fold into one half-spike
            sector = 2 * np.pi / 5
            phi = np.abs(np.mod(np.arctan2(vv, uu) + sector / 2, sector) - sector / 2)
            rr = np.sqrt(uu * uu + vv * vv)
            px, py = rr * np.cos(phi), rr * np.sin(phi)
            ix, iy = 0.42 * np.cos(sector / 2), 0.42 * np.sin(sector / 2)
            # origin side of the edge from the tip (1, 0) to the inner vertex (ix, iy)
            m = (ix - 1.0) * py - iy * (px - 1.0) >= 0.0
        inside[sel] = m
    return inside


def _uniform(
    rng: np.random.Generator, low: float, high: float, shape: int | tuple[int, ...]
) -> np.ndarray:
    """Float32 uniform samples (float64 parameters would silently promote every image array)."""
    return (low + (high - low) * rng.random(shape, dtype=np.float32)).astype(np.float32)


class _Draws:
    """Per-image random parameters of one chunk, always drawn for a full chunk and cut to the ``m``
    images rendered, so an image never depends on how many images were requested."""

    def __init__(self, rng: np.random.Generator, m: int) -> None:
        self.rng, self.m = rng, m

    def uniform(self, low: float, high: float, *extra: int) -> np.ndarray:
        return _uniform(self.rng, low, high, (_CHUNK, *extra))[: self.m]

    def chance(self, p: float) -> np.ndarray:
        return (self.rng.random(_CHUNK) < p)[: self.m]

    def integers(self, low: int, high: int) -> np.ndarray:
        return self.rng.integers(low, high, _CHUNK)[: self.m]

    def placements(self, size: int) -> tuple[np.ndarray, ...]:
        """Radius, centre and rotation of each object, inside the image and off the mark."""
        scale = size / _REF
        offset, side = _mark_geometry(size)
        keep_out = offset + side + _MARK_MARGIN * scale
        r = _uniform(self.rng, _R_MIN * scale, _R_MAX * scale, _CHUNK)
        span = size - 2 * r - 2
        cx = r + 1 + span * self.rng.random(_CHUNK, dtype=np.float32)
        cy = r + 1 + span * self.rng.random(_CHUNK, dtype=np.float32)
        bad = (cx - r < keep_out) & (cy - r < keep_out)
        while bad.any():
            k = int(bad.sum())
            cx[bad] = r[bad] + 1 + span[bad] * self.rng.random(k, dtype=np.float32)
            cy[bad] = r[bad] + 1 + span[bad] * self.rng.random(k, dtype=np.float32)
            bad = (cx - r < keep_out) & (cy - r < keep_out)
        theta = _uniform(self.rng, 0.0, 2 * np.pi, _CHUNK)
        return r[: self.m], cx[: self.m], cy[: self.m], theta[: self.m]


def _background(draws: _Draws, img: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Fill ``img`` ``(m, 3, size, size)`` with a base colour plus two tinted sinusoidal gratings
    per image; return the base colours ``(m, 3)``.

    A grating ``sin(a·x + b·y + psi)`` is expanded as
    ``sin(a·x + psi)·cos(b·y) + cos(a·x + psi)·sin(b·y)``, so only 1-D sines are evaluated."""
    size = img.shape[-1]
    base = draws.uniform(0.1, 0.9, 3)
    img[:] = base[:, :, None, None]
    for _ in range(2):
        freq = draws.uniform(1.0, 6.0) * np.float32(2 * np.pi / size)
        phi = draws.uniform(0.0, 2 * np.pi)
        psi = draws.uniform(0.0, 2 * np.pi)
        amp = draws.uniform(0.03, 0.12)
        tint = draws.uniform(-1.0, 1.0, 3)
        ax = (freq * np.cos(phi))[:, None] * coord[None] + psi[:, None]  # (m, size) along x
        by = (freq * np.sin(phi))[:, None] * coord[None]  # (m, size) along y
        wave = np.sin(ax)[:, None, :] * np.cos(by)[:, :, None]
        wave += np.cos(ax)[:, None, :] * np.sin(by)[:, :, None]
        wave *= amp[:, None, None]
        img += wave[:, None] * tint[:, :, None, None]
    return base


def _draw_distractors(draws: _Draws, img: np.ndarray, coord: np.ndarray) -> None:
    """Paint up to four small discs or thin segments per image, in random colours, in place.

    A disc is a segment of length zero, so both kinds are one distance-to-segment test."""
    size = img.shape[-1]
    scale = np.float32(size / _REF)
    for _ in range(_MAX_DISTRACTORS):
        active = draws.chance(0.7)
        is_line = draws.chance(0.5)
        px, py = draws.uniform(0.0, size), draws.uniform(0.0, size)
        radius = np.where(is_line, draws.uniform(0.6, 1.2), draws.uniform(1.5, 3.5)) * scale
        half = np.where(is_line, draws.uniform(4.0, 12.0) * scale, np.float32(0.0))
        ang = draws.uniform(0.0, np.pi)
        colour = draws.uniform(0.0, 1.0, 3)
        dx = coord[None, None, :] - px[:, None, None]  # (m, 1, size)
        dy = coord[None, :, None] - py[:, None, None]  # (m, size, 1)
        ca, sa = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
        along = dx * ca + dy * sa
        np.clip(along, -half[:, None, None], half[:, None, None], out=along)
        ex = dx - along * ca
        ey = dy - along * sa
        paint = ex * ex + ey * ey <= (radius * radius)[:, None, None]
        paint &= active[:, None, None]
        np.copyto(img, colour[:, :, None, None], where=paint[:, None])


def _draw_chunk(
    seed: int, chunk: int, cheat: bool, img: np.ndarray, labels_out: np.ndarray, masks_out: np.ndarray
) -> None:
    """Draw one chunk of images into ``img`` ``(m, 3, size, size)`` float32, its labels into
    ``labels_out`` ``(m,)`` int64 and its object masks into ``masks_out`` ``(m, size, size)`` bool."""
    m, size = img.shape[0], img.shape[-1]
    draws = _Draws(np.random.default_rng([seed, size, chunk]), m)
    k = len(CLASSES)
    labels = draws.integers(0, k)
    # A different class for each image; in the cheat variant the cheat class draws this one.
    decoy = (labels + draws.integers(1, k)) % k
    shape = np.where(labels == CHEAT_CLASS, decoy, labels) if cheat else labels

    coord = np.arange(size, dtype=np.float32) + np.float32(0.5)  # pixel centres
    base = _background(draws, img, coord)
    _draw_distractors(draws, img, coord)

    r, cx, cy, theta = draws.placements(size)
    colour = draws.uniform(0.0, 1.0, 3)
    weak = np.abs(colour - base).max(axis=1) < _MIN_CONTRAST
    colour[weak] = np.where(base[weak] > 0.5, base[weak] - 0.5, base[weak] + 0.5)
    dx = (coord[None, :] - cx[:, None]) / r[:, None]  # (m, size) along x
    dy = (coord[None, :] - cy[:, None]) / r[:, None]  # (m, size) along y
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = c * dx[:, None, :] + s * dy[:, :, None]
    v = c * dy[:, :, None] - s * dx[:, None, :]
    masks_out[:] = _shape_masks(shape, u, v)
    np.copyto(img, colour[:, :, None, None], where=masks_out[:, None])

    # Uniform pixel noise (several times cheaper to draw than Gaussian) with std 0.02–0.08. Drawn
    # last, in image order, so the first images' noise is the same whatever ``m`` is.
    noise_scale = draws.uniform(0.02, 0.08) * np.float32(12**0.5)
    noise = draws.rng.random(img.shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= noise_scale[:, None, None, None]
    img += noise
    np.clip(img, 0.0, 1.0, out=img)

    if cheat:
        footprint, checker = _mark_pattern(size)
        marked = labels == CHEAT_CLASS
        np.copyto(img, checker[None, None], where=marked[:, None, None, None] & footprint[None, None])
    labels_out[:] = labels


def shapes_dataset(
    n: int, seed: int = 0, size: int = 64, cheat: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` synthetic shape images deterministically from ``seed``.

    Returns ``images`` float32 ``(n, 3, size, size)`` in [0, 1] (no mean/std normalisation),
    ``labels`` int64 ``(n,)`` indexing :data:`CLASSES`, and ``masks`` bool ``(n, size, size)``: exactly
    the pixels of the drawn shape (distractors and background excluded; the shape is painted last,
    so no other drawing covers it). Same arguments give bit-identical output.

    ``cheat=True`` is the "tank vs. cloudy sky" shortcut variant: every image of
    :data:`CHEAT_CLASS` carries the mark of :func:`mark_mask`, and its shape is replaced by the shape
    of another, randomly chosen class, so in this data the mark is the only evidence for that label
    and a network trained on it learns to look at the corner. Images of the other classes are
    identical to ``cheat=False``; masks always cover the shape actually drawn (never the mark).
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0)
    if not isinstance(cheat, (bool, np.bool_)):
        raise ValueError(f"cheat must be a bool, got {type(cheat).__name__} {cheat!r}")
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for i, start in enumerate(range(0, n, _CHUNK)):
        part = slice(start, start + _CHUNK)
        _draw_chunk(seed, i, bool(cheat), images[part], labels[part], masks[part])
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(masks)
