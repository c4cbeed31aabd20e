"""Writes test/fixtures/pillow-bicubic.json: small RGB pictures and what Pillow's resize(..., BICUBIC) makes of
them, for test/node/engine-io/anyres.test.ts (the engine's resize must equal Pillow's bit for bit).

    /usr/bin/python3 scripts/pillow-bicubic-fixture.py
"""
import base64
import json
import os

import numpy as np
from PIL import Image

# (width, height) -> (width, height): shrinking and enlarging on each axis, one axis alone, odd ratios,
# and LLaVA-NeXT's shapes (a tile canvas's side, a base view)
CASES = [((37, 23), (16, 16)), ((23, 17), (48, 35)), ((64, 48), (21, 16)), ((45, 25), (32, 18)),
         ((22, 45), (16, 33)), ((70, 18), (48, 13)), ((9, 13), (9, 40)), ((101, 7), (33, 7))]


def main():
    rng = np.random.default_rng(30)
    out = []
    for i, ((w, h), (W, H)) in enumerate(CASES):
        if i % 2:  # a smooth ramp (exact ties are likelier there) or noise
            a = (np.add.outer(np.arange(h) * 7, np.arange(w) * 3) % 256).astype(np.uint8)[..., None].repeat(3, 2)
            a[..., 1] = 255 - a[..., 1]
        else:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        b = np.asarray(Image.fromarray(a).resize((W, H), Image.BICUBIC))
        out.append({"width": w, "height": h, "to": [W, H], "pixels": base64.b64encode(a.tobytes()).decode(),
                    "resized": base64.b64encode(b.tobytes()).decode()})
    path = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "pillow-bicubic.json")
    with open(path, "w") as f:
        json.dump({"pillow": Image.__version__, "cases": out}, f)


if __name__ == "__main__":
    main()
