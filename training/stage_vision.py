"""
The vision stage: the ViT alone on dense per-patch labels that synthetic scenes give for free (colour and
cell on every patch, shape and size on object patches, the patch holding each object's centre); then frozen.
"""
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import scenes
from checkpoints import save, stage_state
from loop import finished, log, lr_at, precision


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


def train_vision(model, p, out, exclude):
    ck = os.path.join(out, "vision.pt")
    st = stage_state(ck)
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
    val_px, val_labels = data.vision_batch("val", range(64))
    total, bs, t0 = p["vision_steps"], p["vision_batch"], time.time()
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, p["vision_lr"], 50)
        px, labels = data.vision_batch("train", range(step * bs, (step + 1) * bs), exclude)
        with precision(p):
            feats = model.vision(px)
        loss, _ = vision_loss(heads, feats.float(), labels)
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
