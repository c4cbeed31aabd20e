"""
The visual tokens a pruned model keeps, as training and the PyTorch checks model them: the paper's three
budgets, R from a budget (TWIGVLM.md), the order a pruner that finds the objects keeps patches in, and the
attention masks that take visual tokens away from base layers K+1..K_f (pruning) and after K_f (FinalWipe).
"""
import math

import torch


# the paper's three budgets: fractions of the visual tokens pruned
PRUNED_FRACTIONS = (2 / 3, 7 / 9, 8 / 9)


def retained(c, pruned, n=None):
    """R, the visual tokens kept in base layers K+1..K_f when a fraction `pruned` of the N visual tokens goes
    (TWIGVLM.md); N is n (a variant's tokens of one image or clip, newlines included) or one view's patches."""
    n = c.num_patches if n is None else n
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


def drop_masks(c, mask, start, rng, wipe_p, prune_p, labels=None, num_visual=None):
    """Masks for base layers K+1..K_f and after K_f that take visual tokens away from some samples, as TTP
    does at inference: with probability wipe_p a sample's layers after K_f see no visual token (FinalWipe);
    with probability prune_p of those, layers K+1..K_f also see only R of them, R of one of the three
    budgets: the first R of keep_order (the objects first, as a pruner that finds them keeps them) when the
    samples' patch labels are given, else R at random. So the base model learns to carry what it saw into
    the text tokens early, as a model must that is served pruned (LayerSkip, whose code TwigVLM's builds on,
    likewise trains its base model with the layer dropout its inference uses). `start` is the first visual
    token's column (every row's prefix is the same); num_visual, a variant's visual tokens of each row. Returns
    (mid, late) or (None, None)."""
    mid, late = mask.clone(), mask.clone()
    any_drop = False
    for b in range(mask.shape[0]):
        if rng.random() >= wipe_p:
            continue
        any_drop = True
        n = c.num_patches if num_visual is None else num_visual[b]
        late[b, :, :, start : start + n] = float("-inf")
        if rng.random() < prune_p:
            r = retained(c, rng.choice(PRUNED_FRACTIONS), n)
            keep = set(keep_order(labels[b], rng)[:r] if labels is not None else rng.sample(range(n), r))
            gone = torch.tensor([start + j for j in range(n) if j not in keep])
            mid[b, :, :, gone] = float("-inf")
    return (mid, late) if any_drop else (None, None)
