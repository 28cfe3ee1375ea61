"""A procedural world of simple scenes (sky, sun, hills, houses, trees) for the demo models: the training data
of ``tools/train_demo_models.py`` and the fixed inputs of the quality benchmark and its test.

Each scene comes with the words that describe it (colour and object, as the stand-in text encoder of
``tools/demo_models.py`` reads them); edge maps from Canny with the workflows' thresholds (:func:`edge_map`).
"""
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (180, 40, 40), "orange": (235, 140, 40), "yellow": (250, 220, 90), "green": (70, 130, 60),
    "blue": (60, 90, 200), "brown": (120, 80, 50), "white": (235, 235, 235), "pink": (230, 140, 170),
    "purple": (110, 60, 150), "grey": (120, 120, 125),
}
SKIES = {"blue": ((70, 130, 230), (200, 225, 250)), "orange": ((90, 150, 230), (240, 190, 150)),
         "pink": ((120, 110, 200), (240, 170, 190)), "purple": ((40, 30, 90), (150, 90, 160))}
SUNS = ("yellow", "orange", "white", "red")
HILLS = ("green", "brown", "yellow", "purple")
WALLS = ("brown", "red", "white", "blue", "yellow", "grey")
ROOFS = ("red", "brown", "grey", "blue")
CROWNS = ("green", "orange", "yellow")
OBJECTS = ("sky", "sun", "hill", "house", "tree")
# Canny(low_threshold, high_threshold) as the shipped workflows set it.
CANNY = (0.4, 0.8)


def _jitter(rng, colour, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def draw_scene(rng: np.random.Generator, size: int = 128) -> Tuple[Image.Image, List[str]]:
    """One random scene, ``size`` px square, and the words (colour, object pairs) that describe it."""
    words = []
    sky = str(rng.choice(list(SKIES)))
    top, bottom = (np.array(_jitter(rng, c)) for c in SKIES[sky])
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    image = Image.fromarray(np.broadcast_to((1 - y) * top + y * bottom, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    words += [sky, "sky"]
    s = size / 128
    if rng.random() < 0.75:
        sun = str(rng.choice(SUNS))
        r = rng.uniform(7, 16) * s
        cx, cy = rng.uniform(10 * s, size - 10 * s), rng.uniform(8 * s, 50 * s)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, COLOURS[sun], 10))
        words += [sun, "sun"]
    hill = str(rng.choice(HILLS))
    horizon = rng.uniform(60, 95) * s
    points = [(0.0, horizon + rng.uniform(-15, 15) * s)]
    for x in np.linspace(0, size, int(rng.integers(3, 6)))[1:]:
        points.append((float(x), horizon + rng.uniform(-18, 18) * s))
    draw.polygon(points + [(size, size), (0, size)], fill=_jitter(rng, COLOURS[hill]))
    words += [hill, "hill"]
    ground = min(p[1] for p in points)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        wall, roof = str(rng.choice(WALLS)), str(rng.choice(ROOFS))
        w, h = rng.uniform(22, 44) * s, rng.uniform(16, 30) * s
        x0 = rng.uniform(2 * s, size - w - 2 * s)
        y1 = rng.uniform(ground + 12 * s, size - 4 * s)
        draw.rectangle([x0, y1 - h, x0 + w, y1], fill=_jitter(rng, COLOURS[wall], 10))
        draw.polygon([(x0 - 4 * s, y1 - h), (x0 + w / 2, y1 - h - rng.uniform(10, 20) * s), (x0 + w + 4 * s, y1 - h)],
                     fill=_jitter(rng, COLOURS[roof], 10))
        dw = w * 0.25
        draw.rectangle([x0 + w / 2 - dw / 2, y1 - h * 0.55, x0 + w / 2 + dw / 2, y1], fill=(55, 38, 28))
        words += [wall, "house"]
    trees = int(rng.choice([0, 1, 2, 3]))
    if trees:
        crown = str(rng.choice(CROWNS))
        for _ in range(trees):
            x = rng.uniform(6 * s, size - 6 * s)
            base = rng.uniform(ground + 10 * s, size - 2 * s)
            r = rng.uniform(6, 11) * s
            draw.rectangle([x - 1.5 * s, base - 2.2 * r, x + 1.5 * s, base], fill=(80, 55, 35))
            draw.ellipse([x - r, base - 3.4 * r, x + r, base - 1.6 * r], fill=_jitter(rng, COLOURS[crown]))
        words += [crown, "tree"]
    return image, words


def dataset(n: int, seed: int, size: int = 128):
    """``n`` scenes from ``seed``: uint8 images ``(n, size, size, 3)`` and their word lists."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        image, words = draw_scene(rng, size)
        images.append(np.asarray(image))
        captions.append(words)
    return np.stack(images), captions


def canny(images, low: float, high: float, links: int = 16):
    """``(B, H, W)`` booleans: kornia's Canny (ComfyUI's Canny node wraps it) on ``(B, H, W, C)`` images in 0..1.

    Hysteresis is done here with at most ``links`` growth steps from the strong edges: kornia's own loop runs
    until the whole batch converges, which takes minutes for a few hundred images on one CPU core. On the
    scenes' flat colours both give nearly the same edges.
    """
    import kornia
    import torch
    import torch.nn.functional as F
    x = torch.as_tensor(images).float().movedim(-1, 1)
    _, edges = kornia.filters.canny(x, low_threshold=low, high_threshold=high, hysteresis=False)
    strong, weak = edges[:, :1] > 0.75, edges[:, :1] > 0.25
    for _ in range(links):
        grown = weak & (F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0.5)
        if torch.equal(grown, strong):
            break
        strong = grown
    return strong[:, 0]


def edge_map(images):
    """Canny edges with the workflows' thresholds as an IMAGE: ``(B, H, W, C)`` in 0..1 -> ``(B, H, W, 3)`` of
    0 or 1."""
    import torch
    edges = [canny(images[i:i + 200], *CANNY).float() for i in range(0, len(images), 200)]
    return torch.cat(edges)[..., None].repeat(1, 1, 1, 3)


def random_mask(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A random rectangular or elliptical hole, ``(size, size)`` float, 1 = repaint."""
    mask = Image.new("L", (size, size), 0)
    w, h = rng.uniform(0.2, 0.5, size=2) * size
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    shape = ImageDraw.Draw(mask).rectangle if rng.random() < 0.5 else ImageDraw.Draw(mask).ellipse
    shape([x0, y0, x0 + w, y0 + h], fill=255)
    return np.asarray(mask, dtype=np.float32) / 255
