"""
Which visual tokens each pruning mode keeps, computed in PyTorch as TWIGVLM.md and the engine define them, and
the pruned model's greedy answer, for any model (the demo model or a variant: N is every visual token the
placeholder expands to, a NeXT image's newline tokens and a clip's frames included):
  ttp        the twig's last layer (base layers 1..K, then the twig), heads' mean attention probabilities
  fastv      base layer K, the same way
  visionzip  the attention the vision tower's CLS token pays each patch in its feature layer (heads' mean), per
             view or frame: a NeXT view's scores are laid out as its tokens are (anyres.pack_image_features,
             newline tokens scoring 0), a clip frame's pooled token scores the sum of its patches'
  random     R at random (seeded)
Scores are read from the last prompt token's row ("last-token", the released code's) or summed over every
text row ("all-text", the paper's; rows outside the visual span), and the top R kept, ties to the lower index
(the engine's ttp.ts topR). R = ceil((L*R-bar - N*K) / (K_f - K)) with R-bar = round(N * (1 - pruned)).
The pruned forward keeps only those tokens in base layers K+1..K_f and none after (FinalWipe); every token
keeps its position.
"""
import random

import torch

import anyres
from model import causal_mask, pool_frames
from pruning import retained

MODES = ("ttp", "fastv", "visionzip", "random")


def prompt_span(model, ids, pixels):
    """(embedded prompt [1, S, d], the first visual column, N) of one prompt's ids and its model input."""
    x = model.embed(torch.tensor([ids]), pixels)
    start = ids.index(model.c.placeholder)
    return x, start, x.shape[1] - len(ids) + 1


def attention_scores(model, x, start, n, layers, source):
    """The heads' mean attention of the last of `layers` (run on x from the first) on the visual tokens [n]."""
    tables, mask = model.layout(x.shape[1], None)
    for layer in layers[:-1]:
        x = layer(x, tables, mask)
    probs = layers[-1](x, tables, mask, want_probs=True)[1][0].mean(0)  # [S, S]
    if source == "last-token":
        rows = probs[-1:]
    else:
        text = [r for r in range(probs.shape[0]) if not start <= r < start + n]
        rows = probs[text]
    return rows[:, start : start + n].sum(0)


def visionzip_scores(model, pixels):
    """Per visual token, the CLS attention of its view or frame (module doc) [N]."""
    c = model.c
    if c.variant == "next":
        views, size = pixels[0]
        _, cls = model.vision(views, cls_attention=True)
        return anyres.pack_image_features(cls[..., None], size, [list(g) for g in c.grid_pinpoints], c.image_size,
                                          torch.zeros(1))[:, 0]
    if c.variant == "video":
        _, cls = model.vision(pixels[0], cls_attention=True)
        return (pool_frames(cls[..., None], c.pool_stride) * c.pool_stride ** 2).flatten()
    _, cls = model.vision(pixels, cls_attention=True)
    return cls[0]


def top_r(scores, r):
    """Indices of the r highest scores, ascending; ties go to the lower index."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:r])


def scores_for(model, ids, pixels, mode, source="all-text", seed=0):
    """Each visual token's score under a mode (module doc), [N]."""
    with torch.no_grad():
        x, start, n = prompt_span(model, ids, pixels)
        k = model.c.twig_k
        if mode == "ttp":
            return attention_scores(model, x, start, n, list(model.layers[:k]) + list(model.twig.layers), source)
        if mode == "fastv":
            return attention_scores(model, x, start, n, list(model.layers[:k]), source)
        if mode == "visionzip":
            return visionzip_scores(model, pixels)
        if mode == "random":
            rng = random.Random(seed)
            return torch.tensor([rng.random() for _ in range(n)])
    raise ValueError(mode)


def kept(model, ids, pixels, mode, pruned, source="all-text", seed=0):
    """(R, the kept visual indices, ascending) at the budget that prunes a fraction `pruned`."""
    s = scores_for(model, ids, pixels, mode, source, seed)
    r = retained(model.c, pruned, len(s))
    return r, top_r(s, r)


def pruned_layout(keep, start, n, s):
    """The layout of a sequence of s positions (visual tokens at start..start+n-1) that keeps only `keep` of them
    in base layers K+1..K_f and none after: (positions, mask, mid, late) for model.forward."""
    mask = causal_mask(s)
    mid, late = mask.clone(), mask.clone()
    late[:, start : start + n] = float("-inf")
    kept_set = set(keep)
    mid[:, [start + j for j in range(n) if j not in kept_set]] = float("-inf")
    return torch.arange(s), mask, mid, late


def pruned_forward(model, keep, start, n):
    """A forward(ids, pixels) that keeps only the visual tokens `keep` in base layers K+1..K_f and none after
    (all of them with keep None)."""
    def forward(ids, pixels):
        if keep is None:
            return model.forward(ids, pixels)
        return model.forward(ids, pixels, layout=pruned_layout(keep, start, n, ids.shape[1] - 1 + n))
    return forward
