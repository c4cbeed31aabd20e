"""
The NeXT variant's world: the demo model's synthetic world on larger, non-square canvases (one side 192 pixels,
the other 96 to 192, landscape or portrait) with more objects (one to six) that are small for the canvas. The
base view (the whole canvas squeezed to 96x96) shows them at about half their size, too small for the frozen
vision tower to tell their shape and size; the AnyRes tiles (96x96 crops at full resolution) show them at the
scale the tower was trained on. Places are the canvas's 3x3 grid of cells, as in the demo world, and the
questions and descriptions are the demo world's (scenes.questions, scenes.describe); counts go up to "six".

Every scene's model input is anyres.preprocess's, and its labels are per visual token, in the order
anyres.pack_image_features lays the tokens out (base view, then the unpadded tile grid with a newline token
closing each row): (colour+1, kind+1, size+1, is_centre, cell) as in scenes.render, where cell is the object's
own cell on an object's patch, the place of the patch on the canvas elsewhere, and 9 on padding and newlines.
"""
import random

import numpy as np
import torch
from PIL import Image

import anyres
import data
import scenes

# LLaVA-NeXT's grid pinpoints (336 * [[1, 2], [2, 1], [2, 2], [1, 3], [3, 1]]) at this tower's 96 pixels,
# (height, width) each
PINPOINTS = ((96, 192), (192, 96), (192, 192), (96, 288), (288, 96))
TILE = scenes.IMAGE_SIZE
SIDE = scenes.GRID  # patches per side of a view
LONG_SIDE = 192
# the other side: those on which every cell of the 3x3 grid holds a spot of the tiles' grid (below)
SHORT_SIDES = (96, 128, 144, 160, 176, 192)
# the demo's radii: in the tiles (full resolution) the objects are the size the tower was trained on, in the base
# view (the canvas squeezed to 96x96) about half that, too small for it to tell their shape
RADII = scenes.SIZES
# the frozen tower tells shapes at the places of its own training, each object's centre at the middle of a cell
# of a 3x3 grid of 32-pixel cells (an object shifted by 8 pixels: 79% of its patches' shapes read back, by 16:
# 74%, against 98%); so every object sits (jittered as in the demo world) at such a spot of a tile
SPOT = scenes.CELL
COUNTS = [1, 2, 3, 3, 4, 4, 5, 5, 6]
NO_PLACE = 9
EXTRA_WORDS = ("five", "six")


def canvas_size(rng):
    """(width, height): one side 192, the other 96 to 192 in steps of 8, landscape or portrait."""
    short = rng.choice(SHORT_SIDES)
    return (LONG_SIDE, short) if rng.random() < 0.5 else (short, LONG_SIDE)


def sample_objects(rng, max_objects=None):
    """One to six objects in distinct cells (scenes.sample_objects' draws, with more objects)."""
    n = rng.choice(COUNTS if max_objects is None else [c for c in COUNTS if c <= max_objects])
    cells = rng.sample(range(9), n)
    return [{"cell": c, "kind": rng.choice(scenes.KINDS), "colour": rng.choice(scenes.COLOUR_NAMES),
             "size": rng.choice(scenes.SIZE_NAMES)} for c in sorted(cells)]


def scene_key(objects, size):
    return f"{size[0]}x{size[1]};" + scenes.scene_key(objects)


def draw_key(rng):
    """The key of the canvas a scene's seed draws first (make_scene's draws: its size, then its objects)."""
    size = canvas_size(rng)
    return scene_key(sample_objects(rng), size)


def cell_map(size):
    """An L image of the canvas: each pixel's cell of the 3x3 grid, plus 1."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray((1 + (y * 3 // h) * 3 + x * 3 // w).astype(np.uint8))


def view_labels(mask, cells, centre_patches, objects):
    """Labels of one 96x96 view's 12x12 patches from its object mask and cell map (uint8 arrays): the object
    covering at least a quarter of a patch owns it (as scenes.render), its centre patch is marked."""
    out = []
    for py in range(SIDE):
        for px in range(SIDE):
            block = mask[py * 8 : (py + 1) * 8, px * 8 : (px + 1) * 8]
            counts = np.bincount(block.flatten(), minlength=len(objects) + 1)
            counts[0] = 0
            owner = int(counts.argmax()) if counts.max() >= 16 else 0
            if owner:
                o = objects[owner - 1]
                out.append((scenes.COLOUR_NAMES.index(o["colour"]) + 1, scenes.KINDS.index(o["kind"]) + 1,
                            scenes.SIZE_NAMES.index(o["size"]) + 1, int((py, px) in centre_patches[owner - 1]),
                            o["cell"]))
            else:
                c = int(cells[py * 8 + 4, px * 8 + 4])
                out.append((0, 0, 0, 0, c - 1 if c else NO_PLACE))
    return out


def views_labels(mask, centres, objects, size):
    """The labels of each AnyRes view's patches, base view first, then the tiles row by row (module doc)."""
    w, h = size
    pinpoints = [list(p) for p in PINPOINTS]
    masks, best = anyres.views(mask, pinpoints, TILE, resample=Image.NEAREST)
    cells, _ = anyres.views(cell_map(size), pinpoints, TILE, resample=Image.NEAREST)
    new_h, new_w = anyres.get_patch_output_size((h, w), best)
    pad_x, pad_y = (best[1] - new_w) // 2, (best[0] - new_h) // 2
    cols = best[1] // TILE
    per_view = [[set() for _ in objects] for _ in masks]
    for i, (cx, cy) in enumerate(centres):
        per_view[0][i].add((int(cy * TILE / h) // 8, int(cx * TILE / w) // 8))
        x, y = cx * new_w / w + pad_x, cy * new_h / h + pad_y
        per_view[1 + int(y // TILE) * cols + int(x // TILE)][i].add((int(y % TILE) // 8, int(x % TILE) // 8))
    return [view_labels(m, c, centre, objects) for m, c, centre in zip(masks, cells, per_view)]


def token_labels(views, size):
    """The views' labels laid out as pack_image_features lays out the features: packing each label's index,
    with -1 for a newline token."""
    w, h = size
    labels = [lab for v in views for lab in v]
    index = torch.arange(len(labels), dtype=torch.float32).view(len(views), SIDE * SIDE, 1)
    order = anyres.pack_image_features(index, (h, w), [list(p) for p in PINPOINTS], TILE, torch.tensor([-1.0]))
    return [labels[int(i)] if i >= 0 else (0, 0, 0, 0, NO_PLACE) for i in order[:, 0].tolist()]


def spots(objects, size, rng):
    """Each object's centre before jitter: a spot of the tiles' grid of SPOT-pixel cells (their middles, in
    canvas pixels: the canvas lies in the AnyRes grid at scale 1, centred) inside the object's own cell of the
    canvas's 3x3 grid, and far enough from the canvas's edges for a large object."""
    w, h = size
    best = anyres.select_best_resolution((h, w), [list(p) for p in PINPOINTS])
    out = []
    for o in objects:
        xy = []
        for along, side, padded in ((o["cell"] % 3, w, best[1]), (o["cell"] // 3, h, best[0])):
            pad = (padded - side) // 2
            lo, hi = along * side / 3, (along + 1) * side / 3
            margin = RADII["large"][1] + 1
            spots_in = [c - pad for c in range(SPOT // 2, padded, SPOT)
                        if lo <= c - pad < hi and margin <= c - pad <= side - margin]
            assert spots_in, f"no spot for cell {o['cell']} on a {w}x{h} canvas"
            xy.append(rng.choice(spots_in))
        out.append(tuple(xy))
    return out


def make_scene(split, index, base_seed=0, exclude=None, max_objects=None):
    """One canvas scene of a split (its own seeds: no demo scene is drawn again), redrawn while its key is in
    `exclude`: {objects, image, size (width, height), pixels (anyres.preprocess's), labels, num_visual}."""
    rng = random.Random(scenes.sample_seed("canvas-" + split, index, base_seed))
    while True:
        size = canvas_size(rng)
        objects = sample_objects(rng, max_objects)
        if exclude is None or scene_key(objects, size) not in exclude:
            break
    w, h = size
    img = scenes._background(rng, w, h)
    centres = spots(objects, size, rng)
    mask, centres = scenes.draw_objects(img, objects, rng, (w / 3, h / 3), centre=lambda i, o: centres[i])
    views = views_labels(mask, centres, objects, size)
    labels = token_labels(views, size)
    pixels = anyres.preprocess(img, [list(p) for p in PINPOINTS], TILE)
    assert len(labels) == anyres.token_count(pixels[1], [list(p) for p in PINPOINTS], TILE, SIDE)
    return {"objects": objects, "image": img, "size": size, "pixels": pixels, "labels": labels,
            "view_labels": views, "num_visual": len(labels), "rng": rng}


class World:
    """The canvas world as data.batch and the training stages use it."""

    name = "next"
    extra_words = EXTRA_WORDS
    extra_specials = ()

    @staticmethod
    def placeholder(vocab):
        return vocab.image

    @staticmethod
    def make_scene(split, index, exclude=None, max_objects=None):
        return make_scene(split, index, exclude=exclude, max_objects=max_objects)

    @staticmethod
    def turns_for(scene, rng, max_questions, description_p, contrast=False, unordered_p=0.0, places=False):
        return data.turns_for(scene, rng, max_questions, description_p, contrast, unordered_p, places)

    @staticmethod
    def held_out_keys(base_seed=0):
        """The keys of the first held-out canvases of each split, which training never draws."""
        return data.held_out_keys(base_seed, "canvas-", draw_key)


WORLD = World()
