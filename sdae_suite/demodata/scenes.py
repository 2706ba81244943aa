"""Procedural scenes for the embedded demo data: one generator for the pretraining pool, COCO and ADE20K sets.

A scene is textured stuff (sky above a wavy horizon, ground below, a few unlabeled "other" pieces such as walls, rocks
and poles) with objects of six classes on top. A class is defined by its shape AND its regular texture (circle: dots,
square: checker, triangle: stripes, star: waves, ring: concentric bands, cross: grid lines); colours, size, rotation
and position are random, and objects drawn later occlude earlier ones. Stuff carries irregular textures (gravel, grass
streaks, turbulence) at the same scale as the object patterns, so a masked patch is not predictable from its
neighbours' colours and stuff is told from objects by the kind of texture. Pool images (``focus=True``) are
object-centric: one large unoccluded object near the centre, as in an ImageNet photo.

Version 2 (2026-12-03) made the patterns coarse enough to survive the resize to what the demo models see: in version 1
the texture period was 3-6 px at 128 px, 1.5-3 px at the 64 px the models see, and a texture-energy
k-NN (demodata/separability.py) told the pool's classes apart no better than chance (16.1 %, chance 16.7 %); now the
period is 6.5-11.5 % of the image side and the same measurement gives about 60 %.

Everything is drawn with numpy and OpenCV from one ``np.random.Generator``, so a scene is a pure function of its seed.
Hand-written because no library renders labelled scenes; the mask -> polygon conversion is hand-written too because
``cv2.findContours`` gives pixel-centre outlines (which pycocotools rasterises one pixel ring too small) and no holes
in the COCO polygon sense (see :func:`mask_to_polygons`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')  # COCO category ids 1..6
TEXTURES: tuple[str, ...] = ('dots', 'checker', 'stripes', 'waves', 'concentric', 'grid')  # one per class, same order
STUFF: tuple[str, ...] = ('other', 'ground', 'sky')  # semantic ids 0, 1, 2; object class c (1..6) has id c + 2
SEMANTIC_CLASSES: tuple[str, ...] = STUFF + CLASSES  # ids 0..8; 0 is ignored via reduce_zero_label=True
OTHER, GROUND, SKY = 0, 1, 2


@dataclass
class Scene:
    """image: [H, W, 3] uint8 BGR; semantic: [H, W] uint8 ids 0..8; objects: (category id 1..6, visible mask [H, W]
    bool) in drawing order, after occlusion by every object drawn later (may be empty)."""

    image: np.ndarray
    semantic: np.ndarray
    objects: list[tuple[int, np.ndarray]]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random `cells`-wide grid upsampled bicubically. [h, w] float32."""
    grid = rng.random((max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


# Colours are muted: hue and saturation say nothing about a class, and at full saturation they dominate what a
# 2-minute pretraining and a random init encode alike. Measured 2026-12-03 with the MAE demo recipe (6 epochs) against
# random init (seeds 0, 1), tools/probe.py k-NN top-1: full saturation 18.0 vs 17.3-19.7; full saturation with
# black / white pattern colours 18.7 vs 19.3-22.3; saturation x 0.15 (here) 24.3 vs 18.3-21.3, linear 33.7 vs 25.0-30.0.
SATURATION_SCALE = 0.15


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * SATURATION_SCALE * 255, rng.uniform(*val) * 255]]],
                   dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _contrast_colour(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A second colour clearly brighter or darker than `base`, so the class texture stays visible."""
    other = _random_colour(rng, (0.2, 1.0), (0.1, 1.0))
    lum = lambda c: float(c @ np.array([0.114, 0.587, 0.299], np.float32))
    shift = 110.0 if lum(base) < 128 else -110.0
    return np.clip(other + (lum(base) + shift - lum(other)), 0, 255)


def _band_noise(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Irregular texture in [0, 1] with detail at `period` px and at half of it: two octaves of value noise, so
    neighbouring patches are not predictable from each other's mean colour. [h, w] float32."""
    cells = max(2.0, max(h, w) / period)
    fine = _smooth_noise(rng, h, w, int(round(cells))) + 0.5 * _smooth_noise(rng, h, w, int(round(2 * cells)))
    return (fine - fine.min()) / max(float(fine.max() - fine.min()), 1e-6)


def _stuff_texture(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """One of three irregular stuff textures (never the regular object patterns): gravel (thresholded blobs),
    grass (noise streaked along a random direction) or turbulence (folded noise). [h, w] float32 in [0, 1]."""
    kind = int(rng.integers(0, 3))
    noise = _band_noise(rng, h, w, period)
    if kind == 0:
        return (noise > rng.uniform(0.45, 0.6)).astype(np.float32) * 0.8 + 0.2 * noise
    if kind == 1:
        length = int(max(3, period * rng.uniform(1.0, 2.0))) | 1
        kernel = np.zeros((length, length), np.float32)
        cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0)
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        streaks = cv2.filter2D(noise, -1, kernel / max(float(kernel.sum()), 1e-6), borderType=cv2.BORDER_REFLECT)
        return np.clip((streaks - streaks.mean()) * 3 + 0.5, 0, 1)
    return np.abs(2 * noise - 1)


def _background(rng: np.random.Generator, h: int, w: int, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky above a wavy horizon, textured ground below (the horizon may leave the frame). Both carry detail at about
    the object texture's scale `period`. -> image [h, w, 3] f32, ids [h, w]."""
    x = np.arange(w, dtype=np.float32)
    horizon = h * rng.uniform(-0.1, 0.55) + sum(
        h * rng.uniform(0.0, 0.06) * np.sin(x * 2 * np.pi * rng.uniform(0.3, 2.5) / w + rng.uniform(0, 2 * np.pi))
        for _ in range(2))
    rows = np.arange(h, dtype=np.float32)[:, None]
    is_sky = rows < horizon[None, :]
    labels = np.where(is_sky, SKY, GROUND).astype(np.uint8)

    top, bottom = _random_colour(rng, (0.3, 0.8), (0.4, 0.9)), _random_colour(rng, (0.0, 0.4), (0.7, 1.0))
    t = (rows / h)[..., None]
    sky = top * (1 - t) + bottom * t
    clouds = _smooth_noise(rng, h, w, int(rng.integers(3, 7))) * (0.6 + 0.4 * _band_noise(rng, h, w, period))
    sky = sky * (1 - 0.6 * clouds[..., None] ** 2) + 255 * 0.6 * clouds[..., None] ** 2

    ground_colour, second = _random_colour(rng, (0.2, 0.8), (0.25, 0.75)), _random_colour(rng, (0.1, 0.8), (0.2, 0.9))
    coarse = _smooth_noise(rng, h, w, int(rng.integers(3, 7)))[..., None]
    texture = _stuff_texture(rng, h, w, period * rng.uniform(0.7, 1.4))[..., None]
    ground = (ground_colour * (1 - texture) + second * texture) * (0.75 + 0.5 * coarse)
    image = np.where(is_sky[..., None], sky, ground)
    return image.astype(np.float32), labels


def _other_pieces(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, scale: float, period: float
                  ) -> None:
    """0-3 unlabeled pieces (walls, rocks, poles) with irregular stuff textures: semantic id 0, in place."""
    h, w = labels.shape
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.integers(0, 3)
        cx, cy = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        if kind == 0:  # wall / building
            bw, bh = rng.uniform(30, 110) * scale, rng.uniform(30, 120) * scale
            pts = np.array([[cx - bw / 2, cy], [cx + bw / 2, cy], [cx + bw / 2, cy - bh], [cx - bw / 2, cy - bh]])
        elif kind == 1:  # rock: a random star-convex blob
            n, r = int(rng.integers(7, 13)), rng.uniform(12, 45) * scale
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.6, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        else:  # pole
            pw, ph = rng.uniform(3, 8) * scale, rng.uniform(50, 150) * scale
            pts = np.array([[cx - pw, cy], [cx + pw, cy], [cx + pw, cy - ph], [cx - pw, cy - ph]])
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 8).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=3)
        colour = _random_colour(rng, (0.0, 0.6), (0.2, 0.8))
        tex = colour * (0.6 + 0.8 * _stuff_texture(rng, h, w, period))[..., None]
        image[mask > 0] = tex[mask > 0]
        labels[mask > 0] = OTHER


def _shape_polygons(rng: np.random.Generator, cls: int, size: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline of class `cls` (0-based) around the origin, radius ~`size`, unrotated -> (outer [K, 2], hole or None)."""
    def ellipse(rx: float, ry: float) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, max(24, int(size)), endpoint=False)
        return np.stack([rx * np.cos(a), ry * np.sin(a)], 1)

    if cls == 0:  # circle (slightly elliptic)
        return ellipse(size, size * rng.uniform(0.85, 1.0)), None
    if cls == 1:  # square (slightly rectangular)
        a, b = 0.8 * size, 0.8 * size * rng.uniform(0.85, 1.0)
        return np.array([[-a, -b], [a, -b], [a, b], [-a, b]]), None
    if cls == 2:  # triangle, roughly equilateral
        ang = np.pi / 2 + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        return size * np.stack([np.cos(ang), np.sin(ang)], 1), None
    if cls == 3:  # five-pointed star
        ang = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, size, size * rng.uniform(0.38, 0.5))
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1), None
    if cls == 4:  # ring: a real hole
        return ellipse(size, size), ellipse(size * rng.uniform(0.45, 0.65), size * rng.uniform(0.45, 0.65))
    arm = size * rng.uniform(0.28, 0.38)  # cross (plus sign)
    s = size
    return np.array([[-arm, -s], [arm, -s], [arm, -arm], [s, -arm], [s, arm], [arm, arm], [arm, s], [-arm, s],
                     [-arm, arm], [-s, arm], [-s, -arm], [-arm, -arm]]), None


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Class texture in object coordinates (u, v) [h, w]; returns the pattern weight in [0, 1]."""
    if kind == 'dots':
        du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
        return (du**2 + dv**2 < (0.32 * period) ** 2).astype(np.float32)
    if kind == 'checker':
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'stripes':
        return (np.mod(u, period) < period / 2).astype(np.float32)
    if kind == 'waves':
        return (np.sin(2 * np.pi * (u + 0.25 * period * np.sin(2 * np.pi * v / (1.5 * period))) / period) > 0
                ).astype(np.float32)
    if kind == 'concentric':
        return (np.mod(np.sqrt(u**2 + v**2), period) < period / 2).astype(np.float32)
    return ((np.mod(u, period) < 0.3 * period) | (np.mod(v, period) < 0.3 * period)).astype(np.float32)  # grid


def _draw_object(rng: np.random.Generator, image: np.ndarray, cls: int, size_range: tuple[float, float],
                 centre_range: tuple[float, float], period: float) -> np.ndarray:
    """Draw one object of class `cls` (0-based) in place; returns its full (unoccluded) mask [H, W] bool.
    size_range: radius as a fraction of min(H, W), drawn log-uniformly; centre_range: the centre's x and y as fractions
    of W and H; period: the texture period in px."""
    h, w = image.shape[:2]
    size = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1])))) * min(h, w)
    cx, cy, theta = rng.uniform(*centre_range) * w, rng.uniform(*centre_range) * h, rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    outer, hole = _shape_polygons(rng, cls, size)
    mask = np.zeros((h, w), np.uint8)
    to_px = lambda p: np.round((p @ rot.T + [cx, cy]) * 8).astype(np.int32)  # fillPoly with 3 fractional bits
    cv2.fillPoly(mask, [to_px(outer)], 1, lineType=cv2.LINE_8, shift=3)
    if hole is not None:
        cv2.fillPoly(mask, [to_px(hole)], 0, lineType=cv2.LINE_8, shift=3)
    x0, y0, bw, bh = cv2.boundingRect(to_px(outer) >> 3)  # covers the mask; the texture is only computed inside
    x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x0 + bw + 1, w), min(y0 + bh + 1, h)
    if x1 <= x0 or y1 <= y0:
        return mask > 0
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    pattern = _texture(TEXTURES[cls], u, v, period * rng.uniform(0.85, 1.15))[..., None]
    base = _random_colour(rng, (0.3, 1.0), (0.25, 1.0))
    second = _contrast_colour(rng, base)
    light = 1.0 + rng.uniform(-0.15, 0.15) * (u / size)[..., None]  # a soft light gradient across the object
    patch = (base * (1 - pattern) + second * pattern) * light
    region = mask[y0:y1, x0:x1] > 0
    image[y0:y1, x0:x1][region] = patch[region]
    return mask > 0


# Object radius as a fraction of min(H, W), and the texture period. The period is about one ViT patch at the size the
# demo models see the images (pool: 128 px shown at 64 px, 8 px patches; scenes: ~256 px shown at 128-160 px), so a
# masked patch's content is a piece of its object's pattern that the visible patches predict and its neighbours'
# colours do not; much finer patterns vanish in the resize.
SIZE_RANGE = (0.09, 0.30)
FOCUS_SIZE_RANGE = (0.34, 0.48)
PERIOD_RANGE = (0.065, 0.115)


def render_scene(rng: np.random.Generator, height: int, width: int, num_objects: int, focus: bool = False) -> Scene:
    """Render one scene with `num_objects` objects. focus: the last object is large, near the centre and unoccluded,
    as in an object-centric photo (the pretraining pool, whose folder is the class of the largest object)."""
    scale = min(height, width) / 256
    period = rng.uniform(*PERIOD_RANGE) * min(height, width)
    image, semantic = _background(rng, height, width, period)
    _other_pieces(rng, image, semantic, scale, period)
    classes = rng.integers(0, len(CLASSES), num_objects)
    masks = [_draw_object(rng, image, int(c), FOCUS_SIZE_RANGE if focus and i == num_objects - 1 else SIZE_RANGE,
                          (0.3, 0.7) if focus and i == num_objects - 1 else (0.0, 1.0), period)
             for i, c in enumerate(classes)]
    for c, m in zip(classes, masks):
        semantic[m] = c + 3
    occupied = np.zeros((height, width), bool)
    visible = []
    for m in reversed(masks):  # later objects occlude earlier ones
        visible.append(m & ~occupied)
        occupied |= m
    objects = [(int(c) + 1, v) for c, v in zip(classes, reversed(visible))]
    image = cv2.GaussianBlur(image, (3, 3), 0.6)  # mild optical blur: no aliasing stair-steps on edges
    image = image * (1 + rng.uniform(-0.12, 0.12) * np.linspace(-1, 1, width, dtype=np.float32))[None, :, None]
    image += rng.uniform(1.5, 5.0) * rng.standard_normal(image.shape, dtype=np.float32)
    return Scene(np.clip(np.round(image), 0, 255).astype(np.uint8), semantic, objects)


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Exact COCO polygons of a binary mask [H, W]: pycocotools rasterises them back to exactly `mask`.

    OpenCV traces contours through the centres of boundary pixels, which pycocotools rasterises about half a pixel
    too small, so we trace the mask upsampled 2x and map back: the outline then runs a quarter pixel inside the pixel
    edges, which puts every mask pixel centre inside and every other centre outside. COCO has no holes in polygons
    (pycocotools merges the polygons of an object by union), so each hole is spliced into its outer contour through a
    zero-width cut traversed in both directions; pycocotools' even-odd rasterisation cancels the cut exactly.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return []
    y0, x0 = ys.min(), xs.min()
    up = mask[y0:ys.max() + 1, x0:xs.max() + 1].astype(np.uint8).repeat(2, 0).repeat(2, 1)
    offset = (2 * int(x0), 2 * int(y0))
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    hierarchy = hierarchy[0]  # [next, previous, first child, parent] per contour
    contours = [(c.reshape(-1, 2) + 0.5) / 2 for c in contours]
    polygons = []
    for outer, (_, _, child, parent) in zip(contours, hierarchy):
        if parent >= 0:
            continue
        poly = outer
        while child >= 0:
            hole = contours[child]
            dist = ((poly[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
            i, j = np.unravel_index(np.argmin(dist), dist.shape)
            poly = np.concatenate([poly[: i + 1], hole[j:], hole[: j + 1], poly[i:]])
            child = hierarchy[child][0]
        polygons.append([float(x) for x in poly.reshape(-1)])
    return polygons
