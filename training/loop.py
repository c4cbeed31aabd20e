"""
What every training stage's loop shares: progress lines, the learning-rate schedule, and resuming a stage
from its saved state (checkpoints.stage_state).
"""
import math
import time

import torch


def log(msg):
    """A progress line, stamped with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def precision(p):
    """The context a stage's training forward runs in: with the preset's precision "bf16" (or train.py's
    --precision bf16), PyTorch's CPU autocast to bfloat16 (matrix products in bfloat16; weights, optimizer
    state, losses and held-out evaluations in float32); else float32 throughout. On CPUs with AMX a step is
    several times faster (training/README.md); the exported model is float32 either way."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=p.get("precision") == "bf16")


def lr_at(step, total, peak, warmup):
    """Linear warm-up to `peak` over `warmup` steps, then a cosine down to a tenth of it at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def finished(st, steps, module, key, stage=None):
    """True (with the module's weights loaded from it) when a stage's saved state has all its steps."""
    if st is None or st["step"] < steps:
        return False
    module.load_state_dict(st[key])
    log(f"{stage or key}: done already, loaded")
    return True
