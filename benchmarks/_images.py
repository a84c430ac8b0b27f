"""A synthetic, photo-like test image.

The sandbox draws flat shapes and text, which PNG and JPEG compress far better than a
photograph; sizes measured on them alone would flatter every embedding. This picture has
what makes photos expensive: smooth gradients, soft-edged shapes, detail at several scales,
hard edges, and sensor-like noise in each channel. Deterministic for a seed.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageChops, ImageDraw, ImageFilter


def photo_like_png(side: int = 1024, *, seed: int = 0, noise: float = 6.0) -> bytes:
    """A ``side`` x ``side`` RGB PNG that compresses about as badly as a photograph."""
    rng = random.Random(seed)
    gradient = Image.linear_gradient("L").resize((side, side))
    channels = [
        gradient,
        gradient.rotate(90),
        Image.radial_gradient("L").resize((side, side)),
    ]
    image = Image.merge("RGB", channels)
    shapes = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(shapes)
    for _ in range(24):
        x, y = rng.uniform(0, side), rng.uniform(0, side)
        r = rng.uniform(side / 20, side / 4)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    shapes = shapes.filter(ImageFilter.GaussianBlur(side / 64))
    image = Image.blend(image, shapes, 0.55)
    # Detail at several scales (foliage, fabric, hair): noise upsampled from coarser grids.
    for grid, weight in ((side // 64, 0.25), (side // 12, 0.18)):
        texture = Image.merge(
            "RGB", [Image.effect_noise((grid, grid), 64).resize((side, side)) for _ in "RGB"]
        )
        image = Image.blend(image, texture, weight)
    # Hard edges: objects in focus.
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x, y = rng.uniform(0, side), rng.uniform(0, side)
        r = rng.uniform(side / 40, side / 10)
        points = [(x + rng.uniform(-r, r), y + rng.uniform(-r, r)) for _ in range(5)]
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.polygon(points, fill=colour)
    if noise > 0:
        # effect_noise is Gaussian around 128: adding it with offset -128 adds zero-mean grain.
        grain = Image.merge("RGB", [Image.effect_noise((side, side), noise) for _ in "RGB"])
        image = ImageChops.add(image, grain, scale=1.0, offset=-128)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
