"""
Answers inside packed training samples (data.batch): where each answer's target tokens are, their loss
weights, and held-out accuracy (teacher-forced exact match, overall and by question kind).
"""
import random

import torch

import data
import scenes


def answer_runs(targets):
    """The target positions of one row split into consecutive runs, one per answer, in turn order."""
    runs = []
    for j in (targets >= 0).nonzero().flatten().tolist():
        if runs and j == runs[-1][-1] + 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


def answer_weights(tgt, metas, description_weight, first_token_share=None, event_weight=None, is_event=None):
    """Per-position loss weights [B, S'] that give every short answer the same total weight, 1, spread over its
    tokens, and every description `description_weight` (a plain token mean lets the tens of tokens of a
    description outweigh the one word that answers "is there a _", so the kinds whose answer is one hard word
    learn last or never). With first_token_share, a short answer's first token takes that share of its weight
    whatever its length: spread evenly, "nothing </s>" puts 0.5 on the word that decides whether there is an
    event and "a large red circle </s>" 0.2, which tilts that decision towards "nothing" (the clips' event
    questions). With event_weight, a short answer whose question `is_event` (the clips' questions about what
    changes between frames) weighs that much instead of 1."""
    w = torch.zeros(tgt.shape)
    for b, (_, turns) in enumerate(metas):
        for (q, _), run in zip(turns, answer_runs(tgt[b])):
            total = event_weight if event_weight is not None and is_event is not None and is_event(q) else 1.0
            if scenes.is_description(q):
                w[b, run] = description_weight / len(run)
            elif first_token_share is not None and len(run) > 1:
                w[b, run[0]] = total * first_token_share
                w[b, run[1:]] = total * (1.0 - first_token_share) / (len(run) - 1)
            else:
                w[b, run] = total / len(run)
    return w


def answer_counts(logits, tgt, metas):
    """Teacher-forced exact match per answer (all its tokens and </s> argmax-right <=> greedy gives it):
    (short answers right, short answers, descriptions right, descriptions, description tokens right, tokens)."""
    pred = logits.argmax(-1)
    right = short = desc_right = desc = 0
    tok_right = tok_total = 0
    for b, (_, turns) in enumerate(metas):
        for (q, _), run in zip(turns, answer_runs(tgt[b])):
            ok = all(pred[b, j] == tgt[b, j] for j in run)
            if scenes.is_description(q):
                desc += 1
                desc_right += ok
                tok_right += sum(int(pred[b, j] == tgt[b, j]) for j in run)
                tok_total += len(run)
            else:
                short += 1
                right += ok
    return right, short, desc_right, desc, tok_right, tok_total


def answer_accuracy(logits, tgt, metas):
    """answer_counts as fractions: short answers, descriptions, description tokens."""
    return ratios(answer_counts(logits, tgt, metas))


def ratios(counts):
    right, short, desc_right, desc, tok_right, tok_total = counts
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


def accuracy_by_kind(model, vocab, forward, n=150, world=None):
    """Held-out short-answer accuracy per question kind: every question of n validation scenes (a variant's
    `world`'s scenes), packed as independent turns (so each is its single-question prompt). {kind: (right,
    asked)}."""
    model.eval()
    by = {}
    with torch.no_grad():
        for lo in range(0, n, 16):
            ids, tgt, px, metas, layout = data.batch(vocab, "val", range(lo, min(n, lo + 16)), random.Random(lo),
                                                     max_questions=12, description_p=0.0, world=world)
            pred = forward(ids, px, layout=layout).argmax(-1)
            for b, (_, turns) in enumerate(metas):
                for (q, a), run in zip(turns, answer_runs(tgt[b])):
                    # answers "nothing" apart: a model that always says it scores the rate of "nothing" otherwise
                    k = question_kind(q) + (" [nothing]" if a == "nothing" else "")
                    right, asked = by.get(k, (0, 0))
                    by[k] = (right + all(pred[b, j] == tgt[b, j] for j in run), asked + 1)
    model.train()
    return dict(sorted(by.items()))


def held_out(model, vocab, forward, n=96, world=None):
    """Held-out progress: one short answer of each of n validation scenes right, descriptions right, and
    description tokens right (teacher-forced). A variant's `world`'s scenes go through in chunks of 8."""
    model.eval()
    accs = []
    chunk = n if world is None else 8
    with torch.no_grad():
        for desc_p in (0.0, 1.0):
            rng = random.Random(1234)
            counts = [0] * 6
            for lo in range(0, n, chunk):
                ids, tgt, px, metas, layout = data.batch(vocab, "val", range(lo, min(n, lo + chunk)), rng,
                                                         single_turn=True, description_p=desc_p, world=world)
                if desc_p:
                    # keep only the description turn
                    metas = [(s, t[:1]) for s, t in metas]
                counts = [a + b for a, b in zip(counts, answer_counts(forward(ids, px, layout=layout), tgt, metas))]
            accs.append(ratios(counts))
    model.train()
    return accs[0][0], accs[1][1], accs[1][2]
