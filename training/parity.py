"""
Computes what the TypeScript engine must reproduce on an exported checkpoint:
for a few pictures and prompts, the prompt's token ids, the preprocessed
picture (every 8-bit value after the pad to a square and the resize, as
data.square_image makes it, and the sum of the normalised values), the last
prefill position's logits of the full path and of the twig's draft path, the
greedy output (no KV cache: the whole sequence again at every step), and the
visual tokens TTP (the twig's last layer) and FastV (base layer K) keep at the
three budgets under each scorer, with the scores they rank by.

The pictures are the first test scenes and the odd ones of training/data/parity
(written by parity_images.py: non-square, JPEG, alpha, grey, palette, animated GIF).

  /usr/bin/python3 training/parity.py --model models/demo --out models/demo/parity.json
"""
import argparse
import base64
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cores import use_cores  # noqa: E402
import data  # noqa: E402
import pruning  # noqa: E402
from checkpoints import load_exported  # noqa: E402
from model import greedy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    ("test/0000.png", "what colour is the circle ?"),
    ("test/0001.png", "how many objects are there ?"),
    ("test/0002.png", "describe the picture ."),
    ("test/0003.png", "where is the red square ?"),
    ("parity/landscape.png", "how many objects are there ?"),
    ("parity/portrait.png", "describe the picture ."),
    ("parity/panorama.png", "how many objects are there ?"),
    ("parity/small.png", "what colour is the circle ?"),
    ("parity/photo.jpg", "describe the picture ."),
    ("parity/alpha.png", "how many objects are there ?"),
    ("parity/grey.png", "describe the picture ."),
    ("parity/palette.png", "how many objects are there ?"),
    ("parity/animated.gif", "describe the picture ."),
]
SCORERS = ("last-token", "all-text")


def fractions(c):
    """The paper's pruned fractions (pruning.PRUNED_FRACTIONS) whose R-bar this shape can meet with R >= 1: layers
    1..K alone average N*K/L visual tokens (a shallow model, like the smoke test's, cannot go below that)."""
    return [p for p in pruning.PRUNED_FRACTIONS if c.layers * round(c.num_patches * (1 - p)) > c.num_patches * c.twig_k]


def f32(t):
    """A float32 tensor's values as the shortest decimals that read back as the same float32 (ties stay ties)."""
    return [float(str(v)) for v in t.numpy().astype(np.float32)]


def top_r(scores, r):
    """The R highest scores' indices in ascending order; of equal scores the lower index first (the engine's rule)."""
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:r])


def selections(model, ids, px, image_at):
    """For TTP and FastV under each scorer: the visual tokens' scores (the last layer's attention probabilities,
    averaged over heads, from the last prompt token or summed over every text token) and the tokens kept at each
    of fractions(c)."""
    c = model.c
    x = model.embed(torch.tensor([ids]), px)
    tables, mask = model.layout(x.shape[1], None)
    visual = slice(image_at, image_at + c.num_patches)
    text = [i for i in range(x.shape[1]) if not image_at <= i < image_at + c.num_patches]
    out = {}
    for name, layers in (("ttp", list(model.layers[: c.twig_k]) + list(model.twig.layers)),
                         ("fastv", list(model.layers[: c.twig_k]))):
        h = x
        for layer in layers[:-1]:
            h = layer(h, tables, mask)
        probs = layers[-1](h, tables, mask, want_probs=True)[1][0].mean(0)  # [S, S], heads averaged
        out[name] = {}
        for scorer in SCORERS:
            rows = probs[-1:] if scorer == "last-token" else probs[text]
            scores = f32(rows[:, visual].sum(0))
            out[name][scorer] = {"scores": scores,
                                 "kept": [top_r(scores, pruning.retained(c, p)) for p in fractions(c)]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    use_cores(2)
    model = load_exported(args.model)
    vocab = data.Vocab()
    cases = []
    with torch.no_grad():
        for image, question in CASES:
            picture = Image.open(os.path.join(args.data, image))
            square = data.square_image(picture, model.c.image_size)
            px = data.pixels(picture, model.c.image_size)[None]
            ids = data.prompt_ids(vocab, question)
            full = model(torch.tensor([ids]), px)[0, -1]
            twig = model.twig_forward(torch.tensor([ids]), px)[0, -1]
            out = greedy(model.forward, ids, px, vocab.eos, args.max_tokens)
            cases.append({
                "image": image, "imageSize": list(picture.size), "imageMode": picture.mode,
                "question": question, "inputIds": ids,
                "pixels": base64.b64encode(np.asarray(square, dtype=np.uint8).tobytes()).decode(),
                "pixelSum": float(px.double().sum()),
                "logits": f32(full), "twigLogits": f32(twig), "greedyIds": out,
                "greedyText": vocab.decode(out),
                "selection": selections(model, ids, px, ids.index(vocab.image)),
            })
    c = model.c
    budgets = [{"prunedFraction": p, "retainBudget": round(c.num_patches * (1 - p)), "r": pruning.retained(c, p)}
               for p in fractions(c)]
    head = {"model": os.path.basename(os.path.abspath(args.model)), "maxTokens": args.max_tokens,
            "pixelsLayout": "uint8 [size, size, 3] RGB, base64", "budgets": budgets}
    with open(args.out, "w") as f:  # one line per case
        f.write(json.dumps(head)[:-1] + ', "cases": [\n' + ",\n".join(json.dumps(case) for case in cases) + "\n]}\n")
    print(f"wrote {len(cases)} parity cases to {args.out}")


if __name__ == "__main__":
    main()
