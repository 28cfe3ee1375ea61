"""Example input images for the shipped workflows, drawn procedurally (no downloads)."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PHOTO = "cnr_example.png"
INPAINT = "cnr_example_inpaint.png"
HOLE = (200, 230, 330, 420)  # left, top, right, bottom of the area to repaint, on a 512 px image


def hole(size: int = 512):
    """The inpaint hole on a ``size`` px example image (inclusive corners, as PIL draws them)."""
    return tuple(round(v * size / 512) for v in HOLE)


def draw_scene(size: int = 512) -> Image.Image:
    """A simple landscape: sky gradient, sun, hills, a cabin."""
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([235, 200, 170])
    image = Image.fromarray(np.broadcast_to(sky, (size, size, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = size / 512
    draw.ellipse([v * s for v in (360, 60, 440, 140)], fill=(255, 225, 120))
    hills = [(0, 360), (140, 270), (300, 350), (420, 280), (512, 330), (512, 512), (0, 512)]
    draw.polygon([(x * s, y * s) for x, y in hills], fill=(70, 120, 60))
    draw.rectangle([v * s for v in (190, 300, 340, 420)], fill=(120, 80, 50))
    draw.polygon([(x * s, y * s) for x, y in ((170, 300), (265, 230), (360, 300))], fill=(150, 40, 40))
    draw.rectangle([v * s for v in (245, 350, 285, 420)], fill=(60, 40, 30))
    return image


def write_examples(folder, size: int = 512) -> dict:
    """Write the example inputs, ``size`` px square, into ``folder``; returns {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = draw_scene(size)
    scene.save(folder / PHOTO)
    rgba = scene.convert("RGBA")
    alpha = Image.new("L", scene.size, 255)
    ImageDraw.Draw(alpha).rectangle(hole(size), fill=0)  # transparent = masked, as ComfyUI's LoadImage reads it
    rgba.putalpha(alpha)
    rgba.save(folder / INPAINT)
    return {PHOTO: folder / PHOTO, INPAINT: folder / INPAINT}
