"""
Held-out short-answer accuracy by question kind of a training run's base checkpoint
(or its twig's draft path), from PyTorch: a quick check while training runs, before
an export and the engine's eval.

  /usr/bin/python3 training/eval_kinds.py --run training/runs/NAME [--stage twig] [--scenes 150]
                                          [--descriptions 40]

With --descriptions N it also describes N validation pictures greedily and prints the descriptions'
attribute precision and recall (scenes.description_score, as the engine's eval scores them).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import scenes  # noqa: E402
import export  # noqa: E402
import parity  # noqa: E402
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", default="base", choices=["base", "twig"])
    ap.add_argument("--checkpoint", help="a checkpoint file other than the run's own last base phase")
    ap.add_argument("--scenes", type=int, default=150)
    ap.add_argument("--descriptions", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.stage == "twig" and not os.path.exists(os.path.join(args.run, "twig.pt")):
        sys.exit(f"{args.run} has no twig.pt")
    model, _ = export.load_run(args.run)
    base = torch.load(args.checkpoint or train.base_checkpoint(args.run))
    if args.checkpoint:
        model.load_state_dict(base["weights"], strict=False)
    forward = model.twig_forward if args.stage == "twig" else model.forward
    print(f"{args.stage} at step {base['step']}")
    if args.scenes:
        by = train.accuracy_by_kind(model, data.Vocab(), forward, args.scenes)
        right, asked = sum(r for r, _ in by.values()), sum(a for _, a in by.values())
        print(f"{right}/{asked} = {right / asked:.1%} of short answers right")
        for k, (r, a) in by.items():
            print(f"  {k:32s} {r:4d}/{a:<4d} {r / a:6.1%}")
    if args.descriptions:
        describe(model, forward, args.descriptions)


def describe(model, forward, n, max_tokens=90):
    """Greedy descriptions of n validation pictures (vocab.decode drops the </s>)."""
    vocab = data.Vocab()
    model.eval()
    correct = mentioned = truth = 0
    with torch.no_grad():
        for i in range(n):
            s = scenes.make_scene("val", i)
            ids = data.prompt_ids(vocab, scenes.DESCRIBE_PROMPTS[i % 3])
            out = parity.greedy(forward, ids, data.pixels(s["image"])[None], vocab.eos, max_tokens)
            c, m, t = scenes.description_score(vocab.decode(out), s["objects"])
            correct, mentioned, truth = correct + c, mentioned + m, truth + t
    print(f"descriptions of {n} pictures: precision {correct / max(1, mentioned):.1%}, recall "
          f"{correct / max(1, truth):.1%}")


if __name__ == "__main__":
    main()
