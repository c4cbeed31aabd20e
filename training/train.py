"""
Trains the demo model in four stages, each resumable from its checkpoint:
  vision  the ViT alone, on dense per-patch labels (colour, shape, size, centre)
          that synthetic scenes give for free; then frozen.
  align   the projector alone (LLaVA's stage 1 trains only the projector too):
          each patch's visual token is regressed onto a fixed code of its labels
          (a sum of one random vector per colour, shape, size, centre and cell),
          so the decoder starts from clean, well-scaled visual tokens; then frozen.
  base    LLaMA decoder on descriptions and short questions (vision tower and
          projector frozen): the base VLM.
  twig    TwigVLM's recipe: grow the twig from base layers K+1..K+T, the final
          norm and the LM head, freeze everything else, cross-entropy on answers.
Progress lines: step, loss, samples/s, held-out accuracy.

  /usr/bin/python3 training/train.py --out training/runs/demo [--stage all|vision|base|twig]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import scenes  # noqa: E402
from model import Config, Llava  # noqa: E402

PRESETS = {
    # the shipped demo model
    "demo": dict(
        model=dict(hidden=96, intermediate=256, heads=3, kv_heads=3),
        vision_steps=450, vision_batch=32, vision_lr=2e-3,
        align_steps=600, align_batch=32, align_lr=2e-3,
        base_steps=900, base_batch=16, base_lr=2e-3,
        # the twig: the paper's peak learning rate (its batch is 128); 5e-4 drafted better (about 90% of held-out
        # short answers against 60%) but moved the twig's attention off the objects that TTP keeps (model card);
        # 200-400 steps keep more of it (96.4-96.6% at 88.9% pruned on validation) but draft too little for SSD to pay
        twig_steps=800, twig_batch=8, twig_lr=1e-4,
        # every question a scene supports in one sample; scenes of at most 1, 2, 3 objects over the
        # first fractions of the base stage (a curriculum: binding words to patches is learnt on
        # easy scenes first), then the full mix
        max_questions=12, curriculum=((0.1, 1), (0.2, 2), (0.3, 3)),
        # half the samples see no visual token after K_f, a quarter also only R of them in K+1..K_f
        wipe_p=0.5, prune_p=0.5,
        # the projector is trained by the align stage alone
        freeze_projector=True,
        # pruned samples keep the objects' patches first (what a pruner that finds them keeps), not random ones
        prune_keep="objects",
        # attention_supervision (off in this first phase, on in the describe and select phases below; the model
        # card says what it did):
        # dict(layer, head, weight, readout_weight, from_step, descriptions, per_object) teaches the answer's query
        # row in one base layer where the asked objects are (-log of one head's attention mass on their patches,
        # or of the heads' mean with head None; per object with per_object) and what they are (a linear readout of
        # their colour, shape, size and cell from that head's output), each weighted; descriptions: see
        # attention_targets
        eval_every=100,
    ),
    # CI's smoke test: a few steps of a tiny configuration
    "smoke": dict(
        model=dict(vision_width=32, vision_layers=2, vision_heads=2, vision_mlp=64, hidden=32, intermediate=48,
                   layers=8, heads=2, kv_heads=2, final_wipe_layer=6),
        vision_steps=4, vision_batch=4, vision_lr=1e-3,
        align_steps=4, align_batch=4, align_lr=1e-3,
        base_steps=4, base_batch=2, base_lr=1e-3,
        twig_steps=4, twig_batch=2, twig_lr=1e-3,
        max_questions=12, curriculum=((0.5, 2),),
        wipe_p=0.5, prune_p=0.5,
        freeze_projector=True, prune_keep="objects",
        attention_supervision=dict(layer=1, head=0, weight=0.1, readout_weight=0.1, descriptions=True),
        contrast_questions=True, description_weight=4.0,
        eval_every=4,
    ),
}
# Later phases of the base stage (a preset's `then`), each with its own schedule, fresh optimizer and checkpoint
# (base-NAME.pt); each is also a preset of its own, to continue an exported model (`--init-from DIR`).
# continue: no curriculum, a lower peak, every short answer weighted alike, and contrast questions
# (scenes.contrast_questions) for the kinds the first phase never learnt ("is there a _", "how many _ objects")
PRESETS["continue"] = dict(PRESETS["demo"], base_steps=400, base_lr=1e-3, curriculum=(), contrast_questions=True,
                           description_weight=6.0, eval_every=50)
# describe: one head of base layer 9 is also taught where the object each description phrase names is (and a
# readout of that head what it is), as for the short answers
PRESETS["describe"] = dict(PRESETS["continue"], base_steps=300, base_lr=8e-4, attention_supervision=dict(
    layer=8, head=0, weight=0.1, readout_weight=0.1, descriptions=True))
# select: the heads of base layer 5, the layer the twig's last layer is copied from (TTP scores the visual tokens
# by that twig layer's attention, averaged over heads, from the last prompt token), are taught where the objects
# are that the answer needs, each of them: the asked ones for a short answer, all of them for a description. The
# twig is then trained the paper's way (cross-entropy on answers only) from that starting point.
PRESETS["select"] = dict(PRESETS["describe"], base_steps=150, base_lr=5e-4, attention_supervision=dict(
    layer=4, head=None, weight=0.1, readout_weight=0, descriptions="opening", per_object=True))
# unbind (not part of the shipped model; to continue it with --init-from): the select phase's recipe, and half of
# the training descriptions list the objects in a random order with no lead. The ordered descriptions let the
# model predict each place from where the order is up to instead of reading it off the object it has just
# named (eval_kinds.py --binding), so an object named out of turn got the place of the one due.
PRESETS["unbind"] = dict(PRESETS["select"], base_steps=250, unordered_descriptions=0.5)
# bind (a phase of the shipped model since it took the place questions too): the same with a quarter of the
# descriptions unordered, 300 steps (0.5 taught binding but made the model name objects twice). From the model before
# it raised descriptions keyed by place from 70.2% to 76.8% on the test scenes, but its twig then kept fewer objects
# for "how many objects" at 88.9% pruned and TTP fell from 95.2% to 93.6% RelAcc there (model card)
PRESETS["bind"] = dict(PRESETS["select"], base_steps=300, unordered_descriptions=0.25)
# twigaim (a twig stage to try with --init-from DIR --stage twig): the paper's recipe, cross-entropy on answers, with
# the base stage's balance of answers (every short answer weighs 1, a description 6, where a plain token mean lets
# a description's tens of tokens outweigh the short answers) and its contrast questions. The row TTP scores by (the
# last prompt token) predicts a short answer's first word, which needs the asked objects; a description's first
# word needs none, and its many rows move the twig's last layer off the objects its copy attended to.
# Tried on the shipped base model and not shipped: 96.2% at 88.9% pruned on validation (shipped 95.7%), 94.5% on
# the test scenes (shipped 95.2%), and it drafts a little worse (model card).
PRESETS["twigaim"] = dict(PRESETS["demo"], twig_description_weight=6.0, twig_contrast_questions=True)
# places (not part of the shipped model; to continue a model with --init-from): the select phase's recipe, and every
# sample also asks "what is at" each occupied cell. The shipped model answers that for an occupied cell only half
# the time (51% on validation; the eval's "what is at" is mostly empty cells), and a description that names a
# place first and then the object there picks the object's attributes at about that rate.
# From the shipped model: the lookup 73.9%, descriptions keyed by place 75.8% on the test scenes (shipped 70.2%),
# but its twig's TTP kept 94.6% at 88.9% pruned (model card).
PRESETS["places"] = dict(PRESETS["select"], base_steps=250, place_questions=True)
# bindplaces: bind's quarter of unordered descriptions and places' questions together; from bind + 300 steps:
# descriptions 80.8% keyed by place on the test scenes, and 300 steps more (bindplaces-more) 85.0 / 84.6%, and 300
# more on fresh scenes (bindplaces-fresh) the shipped model's (model card)
PRESETS["bindplaces"] = dict(PRESETS["bind"], base_steps=250, place_questions=True)
# the same phases again, under names of their own (each phase has its own checkpoint, base-NAME.pt)
PRESETS["bind-more"] = dict(PRESETS["bind"])
PRESETS["bindplaces-more"] = dict(PRESETS["bindplaces"], base_steps=300)
# bindplaces-fresh: bindplaces on scenes no phase before it drew (every phase above draws the first phase's first
# scenes, with the same questions and phrasings), at a lower peak learning rate: descriptions keyed by place on
# validation from 85.3 / 85.3% to 87.8 / 87.8%, where 300 more steps of bindplaces-more's own scenes gave 84.9 / 85.3%
PRESETS["bindplaces-fresh"] = dict(PRESETS["bindplaces"], base_steps=300, base_lr=3e-4, scenes_from=30_000_000)
# the shipped model's base stage: the first phase, then these, each continuing the one before (model card)
PRESETS["demo"]["then"] = ("continue", "describe", "select", "bind", "bind-more", "bindplaces", "bindplaces-more",
                           "bindplaces-fresh")
PRESETS["smoke-more"] = dict(PRESETS["smoke"], base_steps=2, scenes_from=30_000_000, attention_supervision=dict(
    layer=1, head=None, weight=0.1, readout_weight=0, descriptions="opening", per_object=True))
PRESETS["smoke"]["then"] = ("smoke-more",)


def base_checkpoint(run):
    """The checkpoint of a run's trained base model: its last base phase's."""
    with open(os.path.join(run, "config.json")) as f:
        then = json.load(f)["schedule"].get("then", [])
    return os.path.join(run, ("base-" + then[-1] if then else "base") + ".pt")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def save(path, **state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


class VisionHeads(nn.Module):
    """Per-patch classifiers on the features the projector will see (training only, not exported)."""

    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.colour = nn.Linear(width, len(scenes.COLOURS) + 1)
        self.kind = nn.Linear(width, len(scenes.KINDS) + 1)
        self.size = nn.Linear(width, len(scenes.SIZES) + 1)
        self.centre = nn.Linear(width, 2)
        self.cell = nn.Linear(width, 9)

    def forward(self, feats):
        h = self.norm(feats)
        return self.colour(h), self.kind(h), self.size(h), self.centre(h), self.cell(h)


def vision_batch(split, indices, exclude=None):
    px, labels = [], []
    for i in indices:
        s = scenes.make_scene(split, i, exclude=exclude)
        px.append(data.pixels(s["image"]))
        labels.append(torch.tensor(s["labels"]))
    return torch.stack(px), torch.stack(labels)  # labels [B, N, 5]


def vision_loss(heads, feats, labels):
    """Colour (background included) and cell on every patch; shape and size on object patches; centre
    up-weighted. Accuracies are on object patches, for centre on the centre patches (recall), for cell on all."""
    colour, kind, size, centre, cell = heads(feats)
    obj = labels[..., 0] > 0
    is_centre = labels[..., 3] > 0
    loss = (F.cross_entropy(colour.flatten(0, 1), labels[..., 0].flatten())
            + F.cross_entropy(kind[obj], labels[..., 1][obj]) + F.cross_entropy(size[obj], labels[..., 2][obj])
            + F.cross_entropy(centre.flatten(0, 1), labels[..., 3].flatten(), weight=torch.tensor([1.0, 5.0]))
            + F.cross_entropy(cell.flatten(0, 1), labels[..., 4].flatten()))
    accs = [(colour.argmax(-1) == labels[..., 0])[obj].float().mean().item(),
            (kind.argmax(-1) == labels[..., 1])[obj].float().mean().item(),
            (size.argmax(-1) == labels[..., 2])[obj].float().mean().item(),
            (centre.argmax(-1) == labels[..., 3])[is_centre].float().mean().item(),
            (cell.argmax(-1) == labels[..., 4]).float().mean().item()]
    return loss, accs


def checkpoint(ck):
    """A stage's saved state, or None before its first save."""
    return torch.load(ck) if os.path.exists(ck) else None


def finished(st, steps, module, key, stage=None):
    """True (with the module's weights loaded from it) when a stage's saved state has all its steps."""
    if st is None or st["step"] < steps:
        return False
    module.load_state_dict(st[key])
    log(f"{stage or key}: done already, loaded")
    return True


def train_vision(model, p, out, exclude):
    ck = os.path.join(out, "vision.pt")
    st = checkpoint(ck)
    if finished(st, p["vision_steps"], model.vision, "vision"):
        return
    heads = VisionHeads(model.c.vision_width)
    params = list(model.vision.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=p["vision_lr"], weight_decay=0.01)
    step = 0
    if st is not None:
        model.vision.load_state_dict(st["vision"]), heads.load_state_dict(st["heads"]), opt.load_state_dict(st["opt"])
        step = st["step"]
        log(f"vision: resumed at step {step}")
    val_px, val_labels = vision_batch("val", range(64))
    total, bs, t0 = p["vision_steps"], p["vision_batch"], time.time()
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, p["vision_lr"], 50)
        px, labels = vision_batch("train", range(step * bs, (step + 1) * bs), exclude)
        loss, _ = vision_loss(heads, model.vision(px), labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == total:
            with torch.no_grad():
                _, accs = vision_loss(heads, model.vision(val_px), val_labels)
            rate = 25 * bs / (time.time() - t0)
            t0 = time.time()
            log(f"vision step {step}/{total} loss {loss.item():.4f} {rate:.1f} img/s "
                f"held-out object-patch acc colour {accs[0]:.3f} shape {accs[1]:.3f} size {accs[2]:.3f} centre {accs[3]:.3f} cell {accs[4]:.3f}")
        if step % 100 == 0 or step == total:
            save(ck, vision=model.vision.state_dict(), heads=heads.state_dict(), opt=opt.state_dict(),
                 step=step, done=step >= total)


# the label values each patch has (scenes.render): colour+1, kind+1, size+1 (0 = background), centre, cell
LABEL_VALUES = (len(scenes.COLOURS) + 1, len(scenes.KINDS) + 1, len(scenes.SIZES) + 1, 2, 9)


def label_codes(c, seed=0):
    """Fixed random codes, one [values, hidden] table per label, entries N(0, 1): the visual token the align
    stage asks of the projector for a patch is the sum of its labels' rows, so colour, shape, size, centre
    and cell are each a clean direction of it (the way a learned embedding of the true labels is, which a
    small decoder binds to words at once, where it could not bind the vision tower's raw features through a
    projector trained by the language loss alone)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c.hidden, generator=g) for n in LABEL_VALUES]


def code_targets(codes, labels):
    """[B, N, hidden] targets for labels [B, N, 5]."""
    return sum(table[labels[..., i]] for i, table in enumerate(codes))


def decode_labels(codes, tokens):
    """Each label read back from visual tokens [B, N, hidden] as its table's nearest row (the largest dot
    product less half the row's squared norm); the other labels' rows count as noise: [B, N, 5]."""
    out = []
    for table in codes:
        out.append((tokens @ table.T - (table @ table.T).diagonal() / 2).argmax(-1))
    return torch.stack(out, -1)


def train_align(model, p, out, exclude):
    """The projector alone, regressed onto the label codes of each patch (mean squared error relative to the
    targets' variance); the vision tower stays frozen. Progress: that relative error and how often each label
    is read back from the projected tokens on held-out pictures."""
    ck = os.path.join(out, "align.pt")
    st = checkpoint(ck)
    if finished(st, p["align_steps"], model.projector, "projector", "align"):
        return
    codes = label_codes(model.c)
    params = list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=p["align_lr"], weight_decay=0.0)
    step = 0
    if st is not None:
        model.projector.load_state_dict(st["projector"]), opt.load_state_dict(st["opt"])
        step = st["step"]
        log(f"align: resumed at step {step}")
    val_px, val_labels = vision_batch("val", range(64))
    with torch.no_grad():
        val_feats = model.vision(val_px)
    val_target = code_targets(codes, val_labels)
    total, bs, t0 = p["align_steps"], p["align_batch"], time.time()
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, p["align_lr"], max(1, total // 10))
        px, labels = vision_batch("train", range(20_000_000 + step * bs, 20_000_000 + (step + 1) * bs), exclude)
        with torch.no_grad():
            feats = model.vision(px)
        target = code_targets(codes, labels)
        loss = F.mse_loss(model.projector(feats), target) / target.var()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0 or step == total:
            with torch.no_grad():
                tokens = model.projector(val_feats)
                rel = (F.mse_loss(tokens, val_target) / val_target.var()).item()
                read = (decode_labels(codes, tokens) == val_labels).float().mean((0, 1)).tolist()
            rate = 25 * bs / (time.time() - t0)
            t0 = time.time()
            log(f"align step {step}/{total} loss {loss.item():.4f} {rate:.1f} img/s held-out relative error {rel:.4f}, "
                f"labels read back: colour {read[0]:.3f} shape {read[1]:.3f} size {read[2]:.3f} "
                f"centre {read[3]:.3f} cell {read[4]:.3f}")
        if step % 100 == 0 or step == total:
            save(ck, projector=model.projector.state_dict(), opt=opt.state_dict(), step=step)


def answer_runs(targets):
    """The target positions of one row split into consecutive runs, one per answer, in turn order."""
    runs = []
    for j in (targets >= 0).nonzero().flatten().tolist():
        if runs and j == runs[-1][-1] + 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


def answer_weights(tgt, metas, description_weight):
    """Per-position loss weights [B, S'] that give every short answer the same total weight, 1, spread over its
    tokens, and every description `description_weight` (a plain token mean lets the tens of tokens of a
    description outweigh the one word that answers "is there a _", so the kinds whose answer is one hard word
    learn last or never)."""
    w = torch.zeros(tgt.shape)
    for b, (_, turns) in enumerate(metas):
        for (q, _), run in zip(turns, answer_runs(tgt[b])):
            w[b, run] = (description_weight if q in scenes.DESCRIBE_PROMPTS else 1.0) / len(run)
    return w


def answer_accuracy(logits, tgt, metas):
    """Teacher-forced exact match per answer: all its tokens (and </s>) argmax-right <=> greedy gives it."""
    pred = logits.argmax(-1)
    right = short = desc_right = desc = 0
    tok_right = tok_total = 0
    for b, (_, turns) in enumerate(metas):
        for (q, _), run in zip(turns, answer_runs(tgt[b])):
            ok = all(pred[b, j] == tgt[b, j] for j in run)
            if q in scenes.DESCRIBE_PROMPTS:
                desc += 1
                desc_right += ok
                tok_right += sum(int(pred[b, j] == tgt[b, j]) for j in run)
                tok_total += len(run)
            else:
                short += 1
                right += ok
    return right / max(1, short), desc_right / max(1, desc), tok_right / max(1, tok_total)


def question_kind(q):
    """A question with its colour, shape and position words replaced by _ ("what colour is the _ ?")."""
    named = set(scenes.KINDS) | set(scenes.COLOUR_NAMES) | {w for p in scenes.POSITIONS for w in p.split()}
    out = []
    for w in q.split():
        if w in named:
            if out[-1:] != ["_"]:
                out.append("_")
        else:
            out.append(w)
    return " ".join(out)


def accuracy_by_kind(model, vocab, forward, n=150):
    """Held-out short-answer accuracy per question kind: every question of n validation scenes, packed as
    independent turns (so each is its single-question prompt). {kind: (right, asked)}."""
    model.eval()
    by = {}
    with torch.no_grad():
        for lo in range(0, n, 16):
            ids, tgt, px, metas, layout = data.batch(vocab, "val", range(lo, min(n, lo + 16)), random.Random(lo),
                                                     max_questions=12, description_p=0.0)
            pred = forward(ids, px, layout=layout).argmax(-1)
            for b, (_, turns) in enumerate(metas):
                for (q, _), run in zip(turns, answer_runs(tgt[b])):
                    k = question_kind(q)
                    right, asked = by.get(k, (0, 0))
                    by[k] = (right + all(pred[b, j] == tgt[b, j] for j in run), asked + 1)
    model.train()
    return dict(sorted(by.items()))


def attention_targets(metas, tgt, start, descriptions=False):
    """For each short answer about objects, (row, query row, columns, objects): the row that predicts the
    answer's first token, the visual columns of the patches of the objects the question is about (data gives
    every patch's object for free), and those objects. With `descriptions` True, also every row that predicts
    a word of a description's phrase about one object (the row that picks the next object, then those that
    name it), aimed at that object (description_objects); with "opening", only the row that predicts a
    description's first word (the last prompt token, whose attention TTP scores by), aimed at every object."""
    out = []
    for b, (s, turns) in enumerate(metas):
        for (q, a), run in zip(turns, answer_runs(tgt[b])):
            if q in scenes.DESCRIBE_PROMPTS:
                if descriptions == "opening":
                    out.append((b, run[0], object_columns(s["labels"], s["objects"], start), list(s["objects"])))
                elif descriptions:
                    for (lo, hi), o in description_objects(a, s["objects"]):
                        cols = object_columns(s["labels"], [o], start)
                        out += [(b, run[i], cols, [o]) for i in range(lo, hi)] if cols else []
                continue
            objs = scenes.question_objects(q, s["objects"])
            cols = object_columns(s["labels"], objs, start)
            if cols:
                out.append((b, run[0], cols, objs))
    return out


def object_columns(labels, objects, start):
    """The visual columns of the object patches that lie in the given objects' cells."""
    cells = {o["cell"] for o in objects}
    return [start + j for j, lab in enumerate(labels) if lab[0] and lab[4] in cells]


def description_objects(text, objects):
    """The phrases of a description (scenes.describe) as ((first, end) word indices of the phrase in the
    tokenized text, the object it names): the first phrase follows the ":" of "from the top :", each
    later one the "." before it, and "from the bottom" names the objects in reverse."""
    words = scenes.tokenize_words(text)
    dots = [i for i, w in enumerate(words) if w == "."]
    starts = [words.index(":") + 1] + [d + 1 for d in dots[1:-1]]
    order = list(reversed(objects)) if words[words.index(":") - 1] == "bottom" else list(objects)
    return list(zip(zip(starts, dots[1:]), order))


class ObjectReadout(nn.Module):
    """The attributes of the one asked object read linearly from the supervised head's output at the answer's
    query row (training only, not exported): what that head gathers must describe the object."""

    def __init__(self, head_dim):
        super().__init__()
        self.sizes = [len(scenes.COLOUR_NAMES), len(scenes.KINDS), len(scenes.SIZE_NAMES), 9]
        self.linear = nn.Linear(head_dim, sum(self.sizes))

    def forward(self, heads_out, targets, head):
        one = [(b, row, objs[0]) for b, row, _, objs in targets if len(objs) == 1]
        if not one:
            return heads_out.sum() * 0.0
        logits = self.linear(torch.stack([heads_out[b, head, row] for b, row, _ in one]))
        labels = torch.tensor([[scenes.COLOUR_NAMES.index(o["colour"]), scenes.KINDS.index(o["kind"]),
                                scenes.SIZE_NAMES.index(o["size"]), o["cell"]] for _, _, o in one])
        parts = logits.split(self.sizes, -1)
        return sum(F.cross_entropy(x, labels[:, i]) for i, x in enumerate(parts))


def attention_loss(probs, targets, head, labels=None, start=0):
    """-log of the attention mass one head's query row (or, with head None, the heads' mean: what TTP scores
    by) puts on the asked objects' patches, averaged, and the mean mass. With the samples' patch `labels`, the
    loss takes the mass on each asked object apart (the mean of their -log), so that every object is looked
    at, not the easiest one."""
    loss, mass = [], []
    for b, row, cols, objs in targets:
        p = probs[b, :, row].mean(0) if head is None else probs[b, head, row]
        mass.append(p[cols].sum())
        if labels is None or len(objs) < 2:
            loss.append(-torch.log(mass[-1] + 1e-6))
        else:
            each = [p[object_columns(labels[b], [o], start)].sum() for o in objs]
            loss.append(-torch.stack([torch.log(m + 1e-6) for m in each]).mean())
    return torch.stack(loss).mean(), torch.stack(mass).mean().item()


def held_out(model, vocab, forward, n=96):
    model.eval()
    accs = []
    with torch.no_grad():
        for desc_p in (0.0, 1.0):
            rng = random.Random(1234)
            ids, tgt, px, metas, layout = data.batch(vocab, "val", range(n), rng, single_turn=True,
                                                     description_p=desc_p)
            if desc_p:
                # keep only the description turn
                metas = [(s, t[:1]) for s, t in metas]
            accs.append(answer_accuracy(forward(ids, px, layout=layout), tgt, metas))
    model.train()
    return accs[0][0], accs[1][1], accs[1][2]


# the paper's three budgets: fractions of the visual tokens pruned
PRUNED_FRACTIONS = (2 / 3, 7 / 9, 8 / 9)


def retained(c, pruned):
    """R, the visual tokens kept in base layers K+1..K_f when a fraction `pruned` of them goes (TWIGVLM.md)."""
    n = c.num_patches
    r_bar = round(n * (1 - pruned))
    return min(n, max(1, math.ceil((c.layers * r_bar - n * c.twig_k) / (c.final_wipe_layer - c.twig_k))))


def keep_order(labels, rng, first_cells=()):
    """Patch indices in the order a pruner that finds the objects keeps them: the patches holding an object's
    centre, then the objects' other patches, then background, each group shuffled. With first_cells, the
    patches of the objects in those cells (centres, then the rest) come before the other objects' (an oracle
    that knows which objects a question asks about, eval_kinds --pruned); shuffling an empty group draws
    nothing, so without them the order and the draws are as before."""
    groups = [[j for j, lab in enumerate(labels)
               if lab[0] and (lab[4] in first_cells) == first and bool(lab[3]) == centre]
              for first in (True, False) for centre in (True, False)]
    groups.append([j for j, lab in enumerate(labels) if not lab[0]])
    for g in groups:
        rng.shuffle(g)
    return [j for g in groups for j in g]


def drop_masks(c, mask, start, rng, wipe_p, prune_p, labels=None):
    """Masks for base layers K+1..K_f and after K_f that take visual tokens away from some samples, as TTP
    does at inference: with probability wipe_p a sample's layers after K_f see no visual token (FinalWipe);
    with probability prune_p of those, layers K+1..K_f also see only R of them, R of one of the three
    budgets: the first R of keep_order (the objects first, as a pruner that finds them keeps them) when the
    samples' patch labels are given, else R at random. So the base model learns to carry what it saw into
    the text tokens early, as a model must that is served pruned (LayerSkip, whose code TwigVLM's builds on,
    likewise trains its base model with the layer dropout its inference uses). `start` is the first visual
    token's column (every row's prefix is the same). Returns (mid, late) or (None, None)."""
    n = c.num_patches
    mid, late = mask.clone(), mask.clone()
    any_drop = False
    for b in range(mask.shape[0]):
        if rng.random() >= wipe_p:
            continue
        any_drop = True
        late[b, :, :, start : start + n] = float("-inf")
        if rng.random() < prune_p:
            r = retained(c, rng.choice(PRUNED_FRACTIONS))
            keep = set(keep_order(labels[b], rng)[:r] if labels is not None else rng.sample(range(n), r))
            gone = torch.tensor([start + j for j in range(n) if j not in keep])
            mid[b, :, :, gone] = float("-inf")
    return (mid, late) if any_drop else (None, None)


def train_lm(model, vocab, p, out, exclude, stage, phase=None):
    """Trains the base model or the twig (`stage`); a later base phase (`phase`, see PRESETS) has its own
    checkpoint and log name, and draws the same scenes as the first unless its preset names `scenes_from` (the
    first training scene it draws; its questions and phrasings are then drawn afresh too)."""
    name = f"{stage}-{phase}" if phase else stage
    ck = os.path.join(out, f"{name}.pt")
    is_twig = stage == "twig"
    if is_twig and model.twig is None:
        model.grow_twig()
    params = list(model.twig.parameters()) if is_twig else (
        ([] if p.get("freeze_projector") else list(model.projector.parameters()))
        + list(model.embed_tokens.parameters()) + list(model.layers.parameters())
        + list(model.norm.parameters()) + list(model.lm_head.parameters()))
    module = model.twig if is_twig else model
    opt = torch.optim.AdamW(params, lr=p[f"{stage}_lr"], betas=(0.9, 0.98), weight_decay=0.0)
    sup = None if is_twig else p.get("attention_supervision")
    readout = ObjectReadout(model.c.hidden // model.c.heads) if sup and sup.get("readout_weight") else None
    readout_opt = torch.optim.AdamW(readout.parameters(), lr=p[f"{stage}_lr"]) if readout else None
    step = 0
    if os.path.exists(ck):
        st = torch.load(ck)
        module.load_state_dict(st["weights"], strict=False)
        opt.load_state_dict(st["opt"])
        if readout and "readout" in st:
            readout.load_state_dict(st["readout"])
            readout_opt.load_state_dict(st["readout_opt"])
        step = st["step"]
        log(f"{name}: resumed at step {step}")
    forward = model.twig_forward if is_twig else model.forward
    total, bs = p[f"{stage}_steps"], p[f"{stage}_batch"]
    warmup = max(1, int(0.03 * total)) if is_twig else max(1, min(150, total // 10))
    t0, seen, attn_mass, read_loss = time.time(), 0, float("nan"), torch.tensor(float("nan"))
    fresh = None if is_twig else p.get("scenes_from")
    offset = 10_000_000 if is_twig else fresh or 0  # the twig sees scenes the base stage did not
    model.train()
    model.vision.eval()
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, p[f"{stage}_lr"], warmup)
        rng = random.Random(f"{stage}:{step}" if fresh is None else f"{name}:{fresh}:{step}")
        max_objects = None if is_twig else next((n for f, n in p["curriculum"] if step < f * total), None)
        ids, tgt, px, metas, layout = data.batch(vocab, "train", range(offset + step * bs, offset + (step + 1) * bs), rng,
                                     exclude=exclude, max_questions=p["max_questions"], max_objects=max_objects,
                                     contrast=p.get("twig_contrast_questions" if is_twig else "contrast_questions",
                                                    False),
                                     unordered_p=0.0 if is_twig else p.get("unordered_descriptions", 0.0),
                                     places=not is_twig and p.get("place_questions", False))
        start = int((ids[0] == vocab.image).nonzero()[0, 0])  # the first visual column (every row's prefix is the same)
        if not is_twig and p.get("wipe_p"):
            labels = [m["labels"] for m, _ in metas] if p.get("prune_keep") == "objects" else None
            layout = layout + drop_masks(model.c, layout[1], start, random.Random(f"{stage}:{step}:drop"),
                                         p["wipe_p"], p["prune_p"], labels)
        supervise = sup is not None and step >= sup.get("from_step", 0)
        if supervise:
            logits, probs, heads_out = forward(ids, px, layout=layout, probs_layer=sup["layer"])
        else:
            logits = forward(ids, px, layout=layout)
        weight = p.get("twig_description_weight" if is_twig else "description_weight")
        if weight is None:
            loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
        else:
            w = answer_weights(tgt, metas, weight)
            ce = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="none")
            loss = (ce * w.flatten()).sum() / w.sum()
        if supervise:
            targets = attention_targets(metas, tgt, start, sup.get("descriptions", False))
            if sup["layer"] >= model.c.twig_k and len(layout) > 2 and layout[2] is not None:
                # a layer past K in a sample whose visual tokens were thinned there: the asked objects may be gone
                base = torch.isinf(layout[1][:, 0, -1]).sum(-1)
                thinned = (torch.isinf(layout[2][:, 0, -1]).sum(-1) != base).tolist()
                targets = [t for t in targets if not thinned[t[0]]]
            if targets:
                attn, attn_mass = attention_loss(probs, targets, sup["head"], [m["labels"] for m, _ in metas]
                                                 if sup.get("per_object") else None, start)
                loss = loss + sup["weight"] * attn
                if readout:
                    read_loss = readout(heads_out, targets, sup["head"])
                    loss = loss + sup["readout_weight"] * read_loss
        opt.zero_grad()
        if readout:
            readout_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if readout:
            readout_opt.step()
        step += 1
        seen += bs
        if step % 10 == 0:
            log(f"{name} step {step}/{total} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{seen / (time.time() - t0):.2f} samples/s" + (f" attention on the asked objects {attn_mass:.3f}"
                                                                 if supervise else "")
                + (f" object readout loss {read_loss.item():.3f}" if readout and supervise else ""))
            t0, seen = time.time(), 0
        if step % p["eval_every"] == 0 or step == total:
            short, desc_exact, desc_tok = held_out(model, vocab, forward)
            log(f"{name} held-out at step {step}: short answers {short:.3f}, descriptions exact {desc_exact:.3f}, "
                f"description tokens {desc_tok:.3f}")
            by = accuracy_by_kind(model, vocab, forward, 64)
            log(f"{name} held-out by question kind: " + ", ".join(f"{k} {r}/{a}" for k, (r, a) in by.items()))
            save(ck, weights=module.state_dict(), opt=opt.state_dict(), step=step,
                 **({"readout": readout.state_dict(), "readout_opt": readout_opt.state_dict()} if readout else {}))
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="demo", choices=list(PRESETS))
    ap.add_argument("--stage", default="all", choices=["all", "vision", "align", "base", "twig"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-steps", type=int)
    ap.add_argument("--twig-steps", type=int)
    ap.add_argument("--twig-lr", type=float)
    ap.add_argument("--twig-batch", type=int)
    ap.add_argument("--init-from", help="an exported model directory to start from (continues its training in "
                    "a fresh run; the vision tower is taken from it and counts as trained)")
    ap.add_argument("--vision-from", help="an exported model directory whose vision tower this run takes as its "
                    "trained vision stage (everything else starts afresh)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    p = dict(PRESETS[args.preset])
    if args.base_steps:
        p["base_steps"] = args.base_steps
    if args.twig_steps:
        p["twig_steps"] = args.twig_steps
    if args.twig_lr:
        p["twig_lr"] = args.twig_lr
    if args.twig_batch:
        p["twig_batch"] = args.twig_batch
    os.makedirs(args.out, exist_ok=True)
    vocab = data.Vocab()
    cfg = Config(vocab=len(vocab), image_token=vocab.image, **p["model"])
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"preset": args.preset, "seed": args.seed, "model": cfg.to_dict(), "schedule": p}, f, indent=2)
    model = Llava(cfg)
    if args.init_from or args.vision_from:
        from parity import load_exported

        start = load_exported(args.init_from or args.vision_from)
        if args.init_from:
            model.load_state_dict({k: v for k, v in start.state_dict().items() if not k.startswith("twig.")},
                                  strict=False)
            save(os.path.join(args.out, "align.pt"), projector=model.projector.state_dict(), step=p["align_steps"])
            if args.stage not in ("all", "base"):
                # a run that does not train the base model takes the exported one (no twig yet) as its trained
                # base checkpoint (so `--stage twig` grows a twig on it, and export.py finds it)
                save(base_checkpoint(args.out), weights=model.state_dict(), step=p["base_steps"],
                     init_from=args.init_from)
        else:
            model.vision.load_state_dict(start.vision.state_dict())
        save(os.path.join(args.out, "vision.pt"), vision=model.vision.state_dict(), step=p["vision_steps"])
        log(f"starting from the exported model {args.init_from or args.vision_from}"
            + (" (its vision tower only)" if args.vision_from else ""))
    exclude = data.held_out_keys()
    log(f"model: {sum(x.numel() for x in model.parameters())} parameters; {cfg.num_patches} visual tokens; "
        f"{cfg.layers} layers, K={cfg.twig_k}, T={cfg.twig_t}, K_f={cfg.final_wipe_layer}; vocab {len(vocab)}")
    stages = ["vision", "align", "base", "twig"] if args.stage == "all" else [args.stage]
    if "vision" in stages:
        train_vision(model, p, args.out, exclude)
    else:
        model.vision.load_state_dict(torch.load(os.path.join(args.out, "vision.pt"))["vision"])
    for p_ in model.vision.parameters():
        p_.requires_grad_(False)
    if "align" in stages:
        train_align(model, p, args.out, exclude)
    elif "base" in stages:
        model.projector.load_state_dict(torch.load(os.path.join(args.out, "align.pt"))["projector"])
    if "base" in stages:
        train_lm(model, vocab, p, args.out, exclude, "base")
        for phase in p.get("then", ()):
            train_lm(model, vocab, PRESETS[phase], args.out, exclude, "base", phase)
    elif "twig" in stages:
        model.load_state_dict(torch.load(base_checkpoint(args.out))["weights"], strict=False)
        model.vision.load_state_dict(torch.load(os.path.join(args.out, "vision.pt"))["vision"])
    if "twig" in stages:
        for p_ in model.parameters():
            p_.requires_grad_(False)
        model.grow_twig()
        train_lm(model, vocab, p, args.out, exclude, "twig")
    log("training finished")


if __name__ == "__main__":
    main()
