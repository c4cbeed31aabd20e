"""
The demo model's two variants, each fine-tuned from an exported demo model: LLaVA-NeXT (canvas.py's world,
AnyRes) and LLaVA-NeXT-Video (clips.py's world). A variant keeps the demo model's shapes, vision tower and
words, and adds only what its world needs: image_newline, the words of its questions and descriptions (after
<image>, so that every demo id keeps its meaning), and for video the <video> placeholder.
"""
import dataclasses
import os

import torch
from PIL import Image

import anyres
import canvas
import clips
import data
from model import model_for

WORLDS = {"next": canvas.WORLD, "video": clips.WORLD}


def world_of(name):
    """A preset's world by name, or None for the demo world."""
    return None if name is None else WORLDS[name]


def vocab_for(world):
    """The vocabulary of a world's model: the demo's, plus the world's words and placeholders."""
    return data.Vocab() if world is None else data.Vocab(world.extra_words, world.extra_specials)


def config_for(c, world, vocab):
    """A demo model's config turned into its variant's for `world`."""
    extra = dict(variant=world.name, grid_pinpoints=canvas.PINPOINTS)
    if world.name == "video":
        extra.update(pool_stride=clips.POOL, video_token=vocab.stoi["<video>"])
    # a canvas takes up to 744 visual tokens, a clip up to 288
    return dataclasses.replace(c, vocab=len(vocab), image_token=vocab.image, max_positions=1024, **extra)


def adopt(src, c):
    """A variant model of config c holding a demo model's weights (not its twig): the vocabulary's new rows
    start at the mean of the old ones (embeddings with noise of their spread), image_newline at transformers'
    initialisation."""
    model = model_for(c)
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("twig.")}
    for name in ("embed_tokens.weight", "lm_head.weight"):
        old = state[name]
        new = torch.empty(c.vocab, old.shape[1])
        new[: old.shape[0]] = old
        extra = c.vocab - old.shape[0]
        noise = torch.randn(extra, old.shape[1]) * old.std(0) if name.startswith("embed") else 0
        new[old.shape[0]:] = old.mean(0) + noise
        state[name] = new
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"image_newline"} and not unexpected, (missing, unexpected)
    return model


def model_input(model, record, data_dir):
    """A committed test record (gen_data.py) as the variant model takes it: (the sample, its pixel_values, the
    layout fields of a parity case: images, and the AnyRes grid or the frames)."""
    c = model.c
    if c.variant == "next":
        image = Image.open(os.path.join(data_dir, record["image"]))
        px, size = anyres.preprocess(image, [list(g) for g in c.grid_pinpoints], c.image_size)
        best = anyres.select_best_resolution(size, [list(g) for g in c.grid_pinpoints])
        side = c.image_size // c.patch_size
        rows, cols = best[0] // c.image_size, best[1] // c.image_size
        grid = anyres.unpad_image(torch.zeros(1, rows * side, cols * side), size)
        return (px, size), px, {"images": [record["image"]], "imageSize": list(size), "bestResolution": list(best),
                                "grid": [rows * side, cols * side], "unpaddedGrid": list(grid.shape[1:])}
    frames = [data.pixels(Image.open(os.path.join(data_dir, f)).convert("RGB")) for f in record["frames"]]
    px = torch.stack(frames)
    return px, px, {"images": record["frames"], "frames": len(frames),
                    "tokensPerFrame": (c.image_size // c.patch_size // c.pool_stride) ** 2}
