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
Progress lines: step, loss, samples/s, held-out accuracy. The stages live in stage_vision.py,
stage_align.py and stage_lm.py, the presets in presets.py (training/README.md).

  /usr/bin/python3 training/train.py --out training/runs/demo [--stage all|vision|base|twig]
"""
import argparse
import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cores import bf16_units, use_cores  # noqa: E402
import data  # noqa: E402
from checkpoints import base_checkpoint, load_exported, save  # noqa: E402
from loop import log  # noqa: E402
from model import Config, Llava  # noqa: E402
from presets import PRESETS  # noqa: E402
from stage_align import train_align  # noqa: E402
from stage_lm import train_lm  # noqa: E402
from stage_vision import train_vision  # noqa: E402
from supervision import unsupported  # noqa: E402
from variants import adopt, config_for, vocab_for, world_of  # noqa: E402


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
    ap.add_argument("--precision", choices=["fp32", "bf16"],
                    help="the training forward's precision for every stage and phase (default: the preset's, "
                         "else fp32); bf16 is CPU autocast, several times faster where the CPU has AMX")
    ap.add_argument("--init-from", help="an exported model directory to start from (continues its training in "
                    "a fresh run; the vision tower is taken from it and counts as trained)")
    ap.add_argument("--vision-from", help="an exported model directory whose vision tower this run takes as its "
                    "trained vision stage (everything else starts afresh)")
    args = ap.parse_args()
    use_cores(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    p = dict(PRESETS[args.preset])
    for name in (args.preset, *p.get("then", ())):
        why = unsupported(PRESETS[name])
        if why:
            ap.error(f"--preset {args.preset}: phase {name}: {why}")
    if args.base_steps:
        p["base_steps"] = args.base_steps
    if args.twig_steps:
        p["twig_steps"] = args.twig_steps
    if args.twig_lr:
        p["twig_lr"] = args.twig_lr
    if args.twig_batch:
        p["twig_batch"] = args.twig_batch
    phases = {name: dict(PRESETS[name]) for name in p.get("then", ())}
    if args.precision:
        p["precision"] = args.precision
    for q in phases.values():
        # a later phase runs in the preset's precision unless it names its own (--precision names it for all)
        if args.precision or "precision" not in q:
            q["precision"] = p.get("precision", "fp32")
    if any(q.get("precision") == "bf16" for q in (p, *phases.values())) and not bf16_units():
        log("warning: bf16 training on a CPU without AMX or AVX512-BF16 is emulated, and likely slower than fp32")
    os.makedirs(args.out, exist_ok=True)
    world = world_of(p.get("world"))
    vocab = vocab_for(world)
    if world is not None:
        # a variant (variants.py) is fine-tuned from an exported demo model
        if not args.init_from:
            ap.error(f"--preset {args.preset} fine-tunes an exported demo model: name it with --init-from")
        start = load_exported(args.init_from)
        cfg = config_for(start.c, world, vocab)
    else:
        cfg = Config(vocab=len(vocab), image_token=vocab.image, **p["model"])
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"preset": args.preset, "seed": args.seed, "model": cfg.to_dict(), "schedule": p}, f, indent=2)
    model = Llava(cfg) if world is None else adopt(start, cfg)
    if args.init_from or args.vision_from:
        if world is None:
            start = load_exported(args.init_from or args.vision_from)
        if args.init_from:
            if world is None:
                model.load_state_dict({k: v for k, v in start.state_dict().items() if not k.startswith("twig.")},
                                      strict=False)
            if not p.get("align_pooled"):
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
            + (" (its vision tower only)" if args.vision_from else "")
            + (f", as the {world.name} variant" if world else ""))
    exclude = data.held_out_keys() if world is None else world.held_out_keys()
    log(f"model: {sum(x.numel() for x in model.parameters())} parameters; {cfg.num_patches} visual tokens"
        f"{' per view' if world else ''}; {cfg.layers} layers, K={cfg.twig_k}, T={cfg.twig_t}, "
        f"K_f={cfg.final_wipe_layer}; vocab {len(vocab)}")
    if args.stage != "all":
        stages = [args.stage]
    elif world is None:
        stages = ["vision", "align", "base", "twig"]
    else:
        stages = (["align"] if p.get("align_pooled") else []) + ["base", "twig"]
    if "vision" in stages:
        train_vision(model, p, args.out, exclude)
    else:
        model.vision.load_state_dict(torch.load(os.path.join(args.out, "vision.pt"))["vision"])
    for p_ in model.vision.parameters():
        p_.requires_grad_(False)
    if "align" in stages:
        train_align(model, p, args.out, exclude if world is None else data.held_out_keys())
    elif "base" in stages:
        model.projector.load_state_dict(torch.load(os.path.join(args.out, "align.pt"))["projector"])
    if "base" in stages:
        train_lm(model, vocab, p, args.out, exclude, "base", world=world)
        for phase in p.get("then", ()):
            train_lm(model, vocab, phases[phase], args.out, exclude, "base", phase, world=world)
    elif "twig" in stages:
        model.load_state_dict(torch.load(base_checkpoint(args.out))["weights"], strict=False)
        model.vision.load_state_dict(torch.load(os.path.join(args.out, "vision.pt"))["vision"])
    if "twig" in stages:
        for p_ in model.parameters():
            p_.requires_grad_(False)
        model.grow_twig()
        train_lm(model, vocab, p, args.out, exclude, "twig", world=world)
    log("training finished")


if __name__ == "__main__":
    main()
