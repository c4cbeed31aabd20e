"""
Attention supervision of the base stage's later phases: which query rows of a packed sample must look at
which objects' patches (attention_targets), the loss on one head's or the heads' mean attention mass there,
and a linear readout of the attended objects' attributes (training only, not exported).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import scenes
from answers import answer_runs


def unsupported(phase):
    """Why a phase's schedule asks for supervision these targets cannot give, or None. Aiming every description
    phrase (descriptions True) finds the phrases by the description's lead ("from the top :", description_objects),
    which an unordered description does not have."""
    sup = phase.get("attention_supervision") or {}
    if sup.get("descriptions") is True and phase.get("unordered_descriptions"):
        return ("attention_supervision descriptions=True aims each phrase of a description by its lead "
                "(\"from the top :\"), which unordered descriptions (unordered_descriptions="
                f"{phase['unordered_descriptions']}) do not have: use descriptions=\"opening\" or no unordered ones")
    return None


def attention_targets(metas, tgt, start, descriptions=False, world=None):
    """For each short answer about objects, (row, query row, columns, objects): the row that predicts the
    answer's first token, the visual columns of the patches of the objects the question is about (data gives
    every patch's object for free), and those objects. With `descriptions` True, also every row that predicts
    a word of a description's phrase about one object (the row that picks the next object, then those that
    name it), aimed at that object (description_objects); with "opening", only the row that predicts a
    description's first word (the last prompt token, whose attention TTP scores by), aimed at every object.
    A variant's `world` that says itself which tokens an answer is read from (clips: objects in given frames)
    gives (row, query row, columns, objects, each object's columns) for short answers and, with "opening",
    descriptions."""
    out = []
    for b, (s, turns) in enumerate(metas):
        for (q, a), run in zip(turns, answer_runs(tgt[b])):
            if hasattr(world, "question_columns"):
                got = None if scenes.is_description(q) and descriptions != "opening" else \
                    world.question_columns(s, q, start)
                if got:
                    out.append((b, run[0], got[0], [None] * len(got[1]), got[1]))
                continue
            if scenes.is_description(q):
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
    at, not the easiest one (a target's fifth element, when it has one, gives each object's columns)."""
    loss, mass = [], []
    for t in targets:
        b, row, cols, objs = t[:4]
        p = probs[b, :, row].mean(0) if head is None else probs[b, head, row]
        mass.append(p[cols].sum())
        if labels is None or len(objs) < 2:
            loss.append(-torch.log(mass[-1] + 1e-6))
        else:
            columns = t[4] if len(t) > 4 else [object_columns(labels[b], [o], start) for o in objs]
            each = [p[c].sum() for c in columns]
            loss.append(-torch.stack([torch.log(m + 1e-6) for m in each]).mean())
    return torch.stack(loss).mean(), torch.stack(mass).mean().item()
