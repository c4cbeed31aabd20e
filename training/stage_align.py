"""
The align stage: the projector alone (LLaVA's stage 1 trains only the projector too), each patch's visual
token regressed onto a fixed code of its labels (a sum of one random vector per colour, shape, size, centre
and cell), so the decoder starts from clean, well-scaled visual tokens; then frozen.
"""
import os
import time

import torch
import torch.nn.functional as F

import data
import scenes
from checkpoints import save, stage_state
from loop import finished, log, lr_at, precision
from model import pool_frames


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


def pooled_labels(labels, stride):
    """Labels [B, N, 5] of a P x P patch grid -> [B, (P/stride)^2, 5] of its stride x stride blocks, row by row
    (the video variant's pooled tokens, model.pool_frames): the object label that most of a block's object
    patches have (its centre flag set when any of those is the centre), else the block's first patch."""
    b, n, _ = labels.shape
    side = int(round(n ** 0.5))
    out = []
    for row in labels.tolist():
        pooled = []
        for by in range(0, side, stride):
            for bx in range(0, side, stride):
                block = [row[(by + dy) * side + bx + dx] for dy in range(stride) for dx in range(stride)]
                objs = [tuple(lab[:3]) + (lab[4],) for lab in block if lab[0]]
                if objs:
                    top = max(set(objs), key=objs.count)
                    centre = int(any(lab[3] for lab in block if tuple(lab[:3]) + (lab[4],) == top))
                    pooled.append(list(top[:3]) + [centre, top[3]])
                else:
                    pooled.append(block[0])
        out.append(pooled)
    return torch.tensor(out)


def train_align(model, p, out, exclude):
    """The projector alone, regressed onto the label codes of each patch (mean squared error relative to the
    targets' variance); the vision tower stays frozen. Progress: that relative error and how often each label
    is read back from the projected tokens on held-out pictures. For the video variant the tokens are its pooled
    ones (model.pool_frames before the projector) and the targets their blocks' labels (pooled_labels)."""
    pool = model.c.pool_stride if model.c.variant == "video" else 0

    def project(feats):
        return model.projector(pool_frames(feats, pool) if pool else feats)

    ck = os.path.join(out, "align.pt")
    st = stage_state(ck)
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
    val_px, val_labels = data.vision_batch("val", range(64))
    val_labels = pooled_labels(val_labels, pool) if pool else val_labels
    with torch.no_grad():
        val_feats = model.vision(val_px)
    val_target = code_targets(codes, val_labels)
    total, bs, t0 = p["align_steps"], p["align_batch"], time.time()
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, p["align_lr"], max(1, total // 10))
        px, labels = data.vision_batch("train", range(20_000_000 + step * bs, 20_000_000 + (step + 1) * bs), exclude)
        with torch.no_grad(), precision(p):
            feats = model.vision(px).float()
        target = code_targets(codes, pooled_labels(labels, pool) if pool else labels)
        loss = F.mse_loss(project(feats), target) / target.var()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0 or step == total:
            with torch.no_grad():
                tokens = project(val_feats)
                rel = (F.mse_loss(tokens, val_target) / val_target.var()).item()
                read = (decode_labels(codes, tokens) == val_labels).float().mean((0, 1)).tolist()
            rate = 25 * bs / (time.time() - t0)
            t0 = time.time()
            log(f"align step {step}/{total} loss {loss.item():.4f} {rate:.1f} img/s held-out relative error {rel:.4f}, "
                f"labels read back: colour {read[0]:.3f} shape {read[1]:.3f} size {read[2]:.3f} "
                f"centre {read[3]:.3f} cell {read[4]:.3f}")
        if step % 100 == 0 or step == total:
            save(ck, projector=model.projector.state_dict(), opt=opt.state_dict(), step=step)
