"""
One training step of the base stage (forward and backward of a packed batch), float32 against bfloat16
autocast (`--precision bf16`), interleaved in one run and printed as a table with their ratio. The weights are
a fresh model's (a step's cost does not depend on their values); the batch is a preset's own (its questions,
descriptions and masks).

    /usr/bin/python3 training/bench_step.py [--preset fast-all] [--reps 3] [--threads 1]
"""
import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import data  # noqa: E402
from cores import bf16_units, use_cores  # noqa: E402
from loop import precision  # noqa: E402
from model import Config, Llava  # noqa: E402
from presets import PRESETS  # noqa: E402
from pruning import drop_masks  # noqa: E402
from variants import vocab_for  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="fast-all", help="a preset of the demo model's world")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    use_cores(args.threads)
    p = PRESETS[args.preset]
    if p.get("world"):
        ap.error(f"--preset {args.preset} is a variant's; name a preset of the demo model's world")
    vocab = vocab_for(None)
    model = Llava(Config(vocab=len(vocab), image_token=vocab.image, **p["model"]))
    for q in (*model.vision.parameters(), *model.projector.parameters()):
        q.requires_grad_(False)  # frozen in the base stage
    bs = p["base_batch"]
    ids, tgt, px, metas, layout = data.batch(vocab, "train", range(bs), random.Random(0), max_questions=p["max_questions"],
                                             contrast=p.get("contrast_questions", False),
                                             unordered_p=p.get("unordered_descriptions", 0.0),
                                             places=p.get("place_questions", False))
    start = int((ids[0] == vocab.image).nonzero()[0, 0])
    labels = [m["labels"] for m, _ in metas]
    layout = layout + drop_masks(model.c, layout[1], start, random.Random(1), p["wipe_p"], p["prune_p"], labels)

    def step(prec):
        model.zero_grad()
        t0 = time.perf_counter()
        with precision({"precision": prec}):
            logits = model.forward(ids, px, layout=layout)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100)
        t1 = time.perf_counter()
        loss.backward()
        return t1 - t0, time.perf_counter() - t1, loss.item()

    times = {"fp32": [], "bf16": []}
    losses = {}
    for _ in range(args.reps):
        for prec in times:
            f, b, losses[prec] = step(prec)
            times[prec].append((f, b))
    print(f"preset {args.preset}: a batch of {bs} packed samples, {ids.shape[1]} columns; {args.threads} thread(s); "
          f"bfloat16 units in this CPU: {'yes' if bf16_units() else 'no (emulated)'}; median of {args.reps}")
    print("| precision | forward s | backward s | step s | speed-up over fp32 | loss |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(f + b for f, b in times["fp32"])
    for prec, ts in times.items():
        f, b = statistics.median(x[0] for x in ts), statistics.median(x[1] for x in ts)
        s = statistics.median(x + y for x, y in ts)
        print(f"| {prec} | {f:.2f} | {b:.2f} | {s:.2f} | {base / s:.2f}x | {losses[prec]:.4f} |")


if __name__ == "__main__":
    main()
