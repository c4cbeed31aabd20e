"""
A cheap proxy for the base stage: an L-layer decoder trained on the short questions alone, its visual
tokens either the frozen vision tower through a trained projector (`vision`) or `oracle` embeddings of
each patch's true colour, shape, size and cell. Prints held-out accuracy by question kind every 50 steps.

  /usr/bin/python3 training/proxy.py LAYERS STEPS WIDTH HEADS oracle|vision   (the card: 4 800 96 3)

Needs a vision stage checkpoint at training/runs/demo3/vision.pt (the shipped model's run).
"""
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cores import use_cores  # noqa: E402
import data  # noqa: E402
from answers import accuracy_by_kind  # noqa: E402
from loop import lr_at  # noqa: E402
from model import Config, Llava  # noqa: E402

LR = 2e-3


def main():
    use_cores(2)
    torch.manual_seed(0)
    layers, steps, hidden, heads = (int(x) for x in sys.argv[1:5])
    mode = sys.argv[5]
    if mode not in ("oracle", "vision"):
        sys.exit("the mode is oracle or vision")
    vocab = data.Vocab()
    cfg = Config(vocab=len(vocab), image_token=vocab.image, hidden=hidden, intermediate=hidden * 8 // 3, heads=heads,
                 kv_heads=heads, layers=layers, final_wipe_layer=max(3, layers * 3 // 4))
    m = Llava(cfg)
    m.vision.load_state_dict(torch.load("training/runs/demo3/vision.pt")["vision"])
    for p in m.vision.parameters():
        p.requires_grad_(False)
    params = [p for p in m.parameters() if p.requires_grad]
    if mode == "oracle":
        # each batch's per-patch labels [B, N, 5] (colour, shape, size, centre, cell), kept when data.batch makes
        # it (accuracy_by_kind calls data.batch too), stand in for the vision tower and the projector
        labels, make_batch = {}, data.batch

        def batch_with_labels(*args, **kwargs):
            out = make_batch(*args, **kwargs)
            labels["now"] = torch.tensor([s["labels"] for s, _ in out[3]])
            return out

        data.batch = batch_with_labels
        emb = nn.ModuleList([nn.Embedding(n, hidden) for n in (7, 5, 3, 2, 9)])
        m.vision.forward = lambda pixels: sum(e(labels["now"][..., i]) for i, e in enumerate(emb))
        m.projector.forward = lambda x: x
        params += list(emb.parameters())
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.98), weight_decay=0.0)
    exclude = data.held_out_keys()
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, LR, max(1, steps // 10))
        ids, tgt, px, _, layout = data.batch(vocab, "train", range(step * 16, step * 16 + 16), random.Random(step),
                                             exclude=exclude, max_questions=12, description_p=0.0)
        m.train()
        m.vision.eval()
        loss = F.cross_entropy(m(ids, px, layout=layout).flatten(0, 1), tgt.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            by = accuracy_by_kind(m, vocab, m.forward, 64)
            right, asked = sum(r for r, _ in by.values()), sum(a for _, a in by.values())
            print(f"{mode} L={layers} step {step + 1} loss {loss.item():.3f} {time.time() - t0:.0f}s held-out "
                  f"{right / asked:.1%}: " + ", ".join(f"{k} {r}/{a}" for k, (r, a) in by.items()), flush=True)


if __name__ == "__main__":
    main()
