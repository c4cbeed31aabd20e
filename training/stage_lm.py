"""
The language stages: the base model (the LLaMA decoder on descriptions and short questions, vision tower and
projector frozen; each later phase of a preset's `then` with its own schedule, optimizer and checkpoint) and
the twig (TwigVLM's recipe: grown from base layers K+1..K+T, the final norm and the LM head, everything else
frozen, cross-entropy on answers).
"""
import os
import random
import time

import torch
import torch.nn.functional as F

import data
from answers import accuracy_by_kind, answer_weights, held_out
from checkpoints import save
from loop import log, lr_at, precision
from pruning import drop_masks
from supervision import ObjectReadout, attention_loss, attention_targets


def train_lm(model, vocab, p, out, exclude, stage, phase=None, world=None):
    """Trains the base model or the twig (`stage`); a later base phase (`phase`, see PRESETS) has its own
    checkpoint and log name, and draws the same scenes as the first unless its preset names `scenes_from` (the
    first training scene it draws; its questions and phrasings are then drawn afresh too). A variant's `world`
    (canvas.WORLD, clips.WORLD) draws its scenes; its preset may split each step's batch into micro-batches of
    `micro_batch` samples (the same loss, normalised over the whole batch, in less memory)."""
    name = f"{stage}-{phase}" if phase else stage
    ck = os.path.join(out, f"{name}.pt")
    is_twig = stage == "twig"
    if is_twig and model.twig is None:
        model.grow_twig()
    params = list(model.twig.parameters()) if is_twig else (
        ([] if p.get("freeze_projector") else list(model.projector.parameters()))
        + list(model.embed_tokens.parameters()) + list(model.layers.parameters())
        + list(model.norm.parameters()) + list(model.lm_head.parameters())
        + ([model.image_newline] if hasattr(model, "image_newline") else []))
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
    micro = p.get("micro_batch") or bs

    def warmup(steps):  # of a schedule of `steps`
        return max(1, int(0.03 * steps)) if is_twig else max(1, min(150, steps // 10))

    # early_schedule (until, length): before step `until`, the learning rate and the curriculum follow a
    # schedule of `length` steps (the demo model's first phase ran so: 300 steps of a 600-step schedule)
    until, length = (0, total) if is_twig else p.get("early_schedule", (0, total))
    t0, seen, attn_mass, read_loss = time.time(), 0, float("nan"), torch.tensor(float("nan"))
    fresh = None if is_twig else p.get("scenes_from")
    offset = 10_000_000 if is_twig else fresh or 0  # the twig sees scenes the base stage did not
    placeholder = vocab.image if world is None else world.placeholder(vocab)
    is_event = getattr(world, "is_event_question", None)  # clips' questions about what changes (event_weight)
    model.train()
    model.vision.eval()
    while step < total:
        span = length if step < until else total
        for g in opt.param_groups:
            g["lr"] = lr_at(step, span, p[f"{stage}_lr"], warmup(span))
        rng = random.Random(f"{stage}:{step}" if fresh is None else f"{name}:{fresh}:{step}")
        drop_rng = random.Random(f"{stage}:{step}:drop")
        max_objects = None if is_twig else next((n for f, n in p["curriculum"] if step < f * span), None)
        # a clip world's frames over the first fractions of a phase (clip_frames, like curriculum's objects)
        frames = None if is_twig else next((n for f, n in p.get("clip_frames", ()) if step < f * total), None)
        chunks = []
        for lo in range(offset + step * bs, offset + (step + 1) * bs, micro):
            ids, tgt, px, metas, layout = data.batch(
                vocab, "train", range(lo, min(lo + micro, offset + (step + 1) * bs)), rng, exclude=exclude,
                max_questions=p["max_questions"], max_objects=max_objects,
                contrast=p.get("twig_contrast_questions" if is_twig else "contrast_questions", False),
                unordered_p=0.0 if is_twig else p.get("unordered_descriptions", 0.0),
                places=not is_twig and p.get("place_questions", False), world=world, frames=frames)
            start = int((ids[0] == placeholder).nonzero()[0, 0])  # the first visual column (every row's prefix is the same)
            if not is_twig and p.get("wipe_p"):
                labels = [m["labels"] for m, _ in metas] if p.get("prune_keep") == "objects" else None
                layout = layout + drop_masks(model.c, layout[1], start, drop_rng, p["wipe_p"], p["prune_p"], labels,
                                             None if world is None else [m["num_visual"] for m, _ in metas])
            chunks.append((ids, tgt, px, metas, layout, start))
        supervise = sup is not None and step >= sup.get("from_step", 0)
        weight = p.get("twig_description_weight" if is_twig else "description_weight")
        weights = [answer_weights(c[1], c[3], weight, p.get("first_token_share"), p.get("event_weight"), is_event)
                   for c in chunks] if weight is not None else None
        targets = [supervised_targets(model.c, sup, c, world) if supervise else [] for c in chunks]
        whole = len(chunks) == 1
        opt.zero_grad()
        if readout:
            readout_opt.zero_grad()
        for i, (ids, tgt, px, metas, layout, start) in enumerate(chunks):
            with precision(p):
                if supervise:
                    logits, probs, heads_out = forward(ids, px, layout=layout, probs_layer=sup["layer"])
                    probs, heads_out = probs.float(), heads_out.float()
                else:
                    logits = forward(ids, px, layout=layout)
            logits = logits.float()
            if weight is None and whole:
                loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
            elif weight is None:
                loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="sum") / sum(
                    int((c[1] >= 0).sum()) for c in chunks)
            else:
                w = weights[i]
                ce = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="none")
                loss = (ce * w.flatten()).sum() / (w.sum() if whole else sum(x.sum() for x in weights))
            if targets[i]:
                share = 1 if whole else len(targets[i]) / sum(len(t) for t in targets)
                attn, attn_mass = attention_loss(probs, targets[i], sup["head"], [m["labels"] for m, _ in metas]
                                                 if sup.get("per_object") else None, start)
                loss = loss + sup["weight"] * attn if whole else loss + sup["weight"] * attn * share
                if readout:
                    read_loss = readout(heads_out, targets[i], sup["head"])
                    loss = loss + sup["readout_weight"] * read_loss if whole else \
                        loss + sup["readout_weight"] * read_loss * share
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
            short, desc_exact, desc_tok = held_out(model, vocab, forward, p.get("held_out_scenes", 96), world)
            log(f"{name} held-out at step {step}: short answers {short:.3f}, descriptions exact {desc_exact:.3f}, "
                f"description tokens {desc_tok:.3f}")
            by = accuracy_by_kind(model, vocab, forward, p.get("kind_scenes", 64), world)
            log(f"{name} held-out by question kind: " + ", ".join(f"{k} {r}/{a}" for k, (r, a) in by.items()))
        if step % p["eval_every"] == 0 or step == total or step % p.get("save_every", p["eval_every"]) == 0:
            save(ck, weights=module.state_dict(), opt=opt.state_dict(), step=step,
                 **({"readout": readout.state_dict(), "readout_opt": readout_opt.state_dict()} if readout else {}))
    return model


def supervised_targets(c, sup, chunk, world):
    """The attention targets of a micro-batch (supervision.attention_targets), without the samples whose
    visual tokens were thinned in the supervised layer (past K: the asked objects may be gone)."""
    ids, tgt, px, metas, layout, start = chunk
    targets = attention_targets(metas, tgt, start, sup.get("descriptions", False), world)
    if sup["layer"] >= c.twig_k and len(layout) > 2 and layout[2] is not None:
        base = torch.isinf(layout[1][:, 0, -1]).sum(-1)
        thinned = (torch.isinf(layout[2][:, 0, -1]).sum(-1) != base).tolist()
        targets = [t for t in targets if not thinned[t[0]]]
    return targets
