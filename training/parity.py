"""
Computes what the TypeScript engine must reproduce on an exported checkpoint:
for a few test scenes and prompts, the prompt's token ids, the preprocessed
pixels (a checksum and the first values), the last prefill position's logits of
the full path and of the twig's draft path, and the greedy output (no KV cache:
the whole sequence again at every step).

  /usr/bin/python3 training/parity.py --model models/demo --out models/demo/parity.json
"""
import argparse
import json
import os
import sys

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from checkpoints import load_exported  # noqa: E402
from model import greedy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    ("test/0000.png", "what colour is the circle ?"),
    ("test/0001.png", "how many objects are there ?"),
    ("test/0002.png", "describe the picture ."),
    ("test/0003.png", "where is the red square ?"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_exported(args.model)
    vocab = data.Vocab()
    cases = []
    with torch.no_grad():
        for image, question in CASES:
            px = data.pixels(Image.open(os.path.join(args.data, image)).convert("RGB"))[None]
            ids = data.prompt_ids(vocab, question)
            full = model(torch.tensor([ids]), px)[0, -1]
            twig = model.twig_forward(torch.tensor([ids]), px)[0, -1]
            out = greedy(model.forward, ids, px, vocab.eos, args.max_tokens)
            flat = px.flatten()
            cases.append({
                "image": image, "question": question, "inputIds": ids,
                "pixelSum": float(flat.double().sum()), "pixelFirst": flat[:16].tolist(),
                "logits": full.tolist(), "twigLogits": twig.tolist(), "greedyIds": out,
                "greedyText": vocab.decode(out),
            })
    json.dump({"model": os.path.basename(os.path.abspath(args.model)), "maxTokens": args.max_tokens, "cases": cases},
              open(args.out, "w"), indent=1)
    print(f"wrote {len(cases)} parity cases to {args.out}")


if __name__ == "__main__":
    main()
