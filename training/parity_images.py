"""
Writes the pictures of the parity fixtures that are not plain 96x96 RGB PNG scenes: test scenes pasted into
wider, taller and much wider canvases, scaled down and up, and saved as JPEG, PNG with an alpha channel, grey
PNG, palette PNG and animated GIF, so that the engine's image preprocessing (decoding, pad to a square, resize) is checked
against the training code's (data.square_image) on the kinds of files users send.

  /usr/bin/python3 training/parity_images.py      # -> training/data/parity/*.png, *.jpg, *.gif (committed)

Deterministic: the same files every run (PIL's encoders with fixed settings).
"""
import argparse
import os
import random
import sys

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def canvas(w, h, seed):
    """A canvas of 4x4-pixel blocks of noise around a base colour (so that padding is never confused with it)."""
    rng = random.Random(seed)
    base = [rng.randrange(60, 200) for _ in range(3)]
    bw, bh = -(-w // 4), -(-h // 4)
    img = Image.new("RGB", (bw, bh))
    img.putdata([tuple(min(255, max(0, c + rng.randrange(-25, 26))) for c in base) for _ in range(bw * bh)])
    return img.resize((bw * 4, bh * 4), Image.NEAREST).crop((0, 0, w, h))


def pasted(index, w, h, at, scale=1.0):
    """Test scene `index`, scaled by `scale` (bicubic), pasted at `at` into a w x h canvas."""
    scene = scenes.make_scene("test", index)["image"]
    if scale != 1.0:
        side = round(scenes.IMAGE_SIZE * scale)
        scene = scene.resize((side, side), Image.BICUBIC)
    img = canvas(w, h, index)
    img.paste(scene, at)
    return img


def pictures():
    """name -> (PIL image, save options)."""
    out = {}
    # wider than tall, an odd difference (the pad splits 50 / 51), downscaled 197 -> 96
    out["landscape.png"] = (pasted(4, 197, 96, (70, 0)), {})
    # taller than wide, scene scaled up: downscaled 150 -> 96
    out["portrait.png"] = (pasted(5, 120, 150, (0, 20), scale=1.25), {})
    # 8:1, the scene a small part of it
    out["panorama.png"] = (pasted(6, 768, 96, (300, 0)), {})
    # smaller than the tower's size: padded 48 x 40 -> 48 x 48, then upscaled to 96
    out["small.png"] = (pasted(7, 48, 40, (0, 0), scale=0.4), {})
    # JPEG (4:2:0 chroma, the encoder's default), 144 x 96
    out["photo.jpg"] = (pasted(8, 144, 96, (30, 0)), {"quality": 90})
    # RGBA: an opaque scene in a canvas whose alpha fades out (transparent pixels keep their colour)
    rgba = pasted(9, 120, 96, (12, 0)).convert("RGBA")
    alpha = Image.new("L", rgba.size)
    alpha.putdata([255 if 12 <= x < 108 else (x * 21) % 256 for _ in range(96) for x in range(120)])
    rgba.putalpha(alpha)
    out["alpha.png"] = (rgba, {})
    # grey, 96 x 112
    out["grey.png"] = (pasted(10, 96, 112, (0, 8)).convert("L"), {})
    # palette (256 colours, adaptive), square at the tower's size: decoding alone
    out["palette.png"] = (scenes.make_scene("test", 11)["image"].convert("P", palette=Image.ADAPTIVE), {})
    # animated GIF, 96 x 120: the first frame is the picture (as PIL opens it), the second another scene
    first = pasted(12, 96, 120, (0, 24)).convert("P", palette=Image.ADAPTIVE)
    second = pasted(13, 96, 120, (0, 0)).convert("P", palette=Image.ADAPTIVE)
    out["animated.gif"] = (first, {"save_all": True, "append_images": [second], "duration": 200, "loop": 0})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "data", "parity"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, (img, options) in pictures().items():
        img.save(os.path.join(args.out, name), **options)
    print(f"wrote {len(pictures())} pictures to {args.out}")


if __name__ == "__main__":
    main()
