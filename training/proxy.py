"""
A cheap proxy for the base stage: an L-layer decoder trained on the short questions alone, its visual
tokens either the frozen vision tower through a trained projector (`vision`) or `oracle` embeddings of
each patch's true colour, shape, size and cell. Prints held-out accuracy by question kind every 50 steps.

  /usr/bin/python3 training/proxy.py LAYERS STEPS WIDTH HEADS oracle|vision   (the card: 4 800 96 3)

Needs a vision stage checkpoint at training/runs/demo3/vision.pt (the shipped model's run).
"""
import os, sys, random, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch, torch.nn as nn, torch.nn.functional as F, data, train, scenes
from model import Config, Llava
torch.set_num_threads(2); torch.manual_seed(0)
L, steps, hidden, heads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
mode = sys.argv[5]  # oracle | vision
vocab = data.Vocab()
cfg = Config(vocab=len(vocab), image_token=vocab.image, hidden=hidden, intermediate=hidden * 8 // 3, heads=heads, kv_heads=heads, layers=L, final_wipe_layer=max(3, L * 3 // 4))
m = Llava(cfg); m.vision.load_state_dict(torch.load("training/runs/demo3/vision.pt")["vision"])
for p in m.vision.parameters(): p.requires_grad_(False)
emb = nn.ModuleList([nn.Embedding(n, hidden) for n in (7, 5, 3, 2, 9)])
cur = {}
def feats_oracle(pixels):
    lab = cur["labels"]  # [B,N,5]
    return sum(e(lab[..., i]) for i, e in enumerate(emb))
if mode == "oracle":
    m.projector.forward = lambda x: x
    m.vision.forward = feats_oracle
params = [p for p in m.parameters() if p.requires_grad] + list(emb.parameters())
opt = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.98), weight_decay=0.0)
exclude = data.held_out_keys(); t0 = time.time()
def fwd(ids, px, layout=None): return m(ids, px, layout=layout)
def batch(split, idx, rng, **kw):
    out = data.batch(vocab, split, idx, rng, **kw)
    cur["labels"] = torch.tensor([s["labels"] for s, _ in out[3]])
    return out
for step in range(steps):
    for g in opt.param_groups: g["lr"] = train.lr_at(step, steps, 2e-3, max(1, steps // 10))
    ids, tgt, px, metas, layout = batch("train", range(step * 16, step * 16 + 16), random.Random(step), exclude=exclude, max_questions=12, description_p=0.0)
    m.train()
    loss = F.cross_entropy(m(ids, px, layout=layout).flatten(0, 1), tgt.flatten(), ignore_index=-100)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    if (step + 1) % 50 == 0:
        # held-out by kind, with labels set per batch
        by = {}
        m.eval()
        with torch.no_grad():
            for lo in range(0, 64, 16):
                ids, tgt, px, metas, layout = batch("val", range(lo, lo + 16), random.Random(lo), max_questions=12, description_p=0.0)
                pred = m(ids, px, layout=layout).argmax(-1)
                for b, (_, turns) in enumerate(metas):
                    for (q, _), run in zip(turns, train.answer_runs(tgt[b])):
                        k = train.question_kind(q); r, a = by.get(k, (0, 0))
                        by[k] = (r + all(pred[b, j] == tgt[b, j] for j in run), a + 1)
        r, a = sum(x for x, _ in by.values()), sum(y for _, y in by.values())
        print(f"{mode} L={L} step {step+1} loss {loss.item():.3f} {time.time()-t0:.0f}s held-out {r/a:.1%} " + ", ".join(f"{k.split(' ')[1] if not k.startswith('how') else k[:10]}:{x}/{y}" for k, (x, y) in sorted(by.items())), flush=True)
