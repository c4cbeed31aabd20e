"""
A variant's held-out numbers in PyTorch, before the engine's eval covers it: on the committed test split
(data/next-test.jsonl or data/video-test.jsonl),
  short answers   every question of the first --limit scenes, teacher-forced exact match (= greedy exact match),
                  unpruned and with each pruning mode's kept tokens (keep_sets.py: ttp and fastv scored by
                  all-text and by last-token, visionzip, random) at the three budgets, and RelAcc against unpruned;
  descriptions    greedy descriptions of the first --descriptions scenes, precision and recall as the engine's
                  eval scores them (scenes.description_score keyed by place; for clips, clips.description_score);
  drafting        on those descriptions, the twig's drafts against the full model's greedy output as self-
                  speculative decoding would take them (up to 5 drafts, stopping below probability 0.6): the share
                  of drafts accepted and the tokens each verification emits.

  /usr/bin/python3 training/eval_variants.py --model models/demo-next [--limit 50] [--descriptions 20] [--out F]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clips  # noqa: E402
from cores import use_cores  # noqa: E402
import data  # noqa: E402
import keep_sets  # noqa: E402
import scenes  # noqa: E402
import variants  # noqa: E402
from checkpoints import load_exported  # noqa: E402
from model import greedy  # noqa: E402
from pruning import PRUNED_FRACTIONS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCORERS = (("ttp", "all-text"), ("ttp", "last-token"), ("fastv", "all-text"), ("fastv", "last-token"),
           ("visionzip", None), ("random", None))


def answer_right(model, ids, answer, sample, keep, start, n):
    """Whether every answer token (and </s>) is the argmax after the prompt and the answer so far, with only
    `keep` of the visual tokens in base layers K+1..K_f and none after (keep None: all of them)."""
    x = torch.tensor([(ids + answer)[:-1]])
    layout = None if keep is None else keep_sets.pruned_layout(keep, start, n, x.shape[1] - 1 + n)
    logits = model(x, [sample], layout=layout)[0]
    pred = logits[-len(answer):].argmax(-1).tolist()
    return pred == answer


def drafting(model, ids, sample, out, delta=5, theta=0.6):
    """Self-speculative decoding of the full model's greedy output `out`: (drafted, accepted, verifications)."""
    drafted = accepted = verifications = 0
    t = 0
    while t < len(out):
        drafts = []
        while len(drafts) < delta:
            probs = torch.softmax(model.twig_forward(torch.tensor([ids + out[:t] + drafts]), [sample])[0, -1], -1)
            tok = int(probs.argmax())
            drafts.append(tok)
            if tok == model.c.eos or float(probs[tok]) < theta:
                break
        good = 0
        while good < len(drafts) and t + good < len(out) and drafts[good] == out[t + good]:
            good += 1
        drafted, accepted, verifications = drafted + len(drafts), accepted + good, verifications + 1
        t += good + 1
    return drafted, accepted, verifications


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--descriptions", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    use_cores(args.threads)
    t0 = time.time()
    model = load_exported(args.model)
    world = variants.WORLDS[model.c.variant]
    vocab = variants.vocab_for(world)
    placeholder = world.placeholder(vocab)
    records = [json.loads(line) for line in open(os.path.join(args.data, f"{world.name}-test.jsonl"))]
    names = ["base"] + [f"{m}/{s}/{f:.3f}" if s else f"{m}/{f:.3f}" for m, s in SCORERS for f in PRUNED_FRACTIONS]
    right = dict.fromkeys(names, 0)
    by_kind = {}
    asked = 0
    with torch.no_grad():
        for r in records[: args.limit]:
            sample, _, _ = variants.model_input(model, r, args.data)
            for qa in r["questions"]:
                ids = data.prompt_ids(vocab, qa["question"], placeholder)
                answer = vocab.encode(qa["answer"]) + [vocab.eos]
                start = ids.index(placeholder)
                n = model.visual_features([sample])[0].shape[0]
                kind = by_kind.setdefault(" ".join(qa["question"].split()[:3]), dict.fromkeys(names, 0) | {"asked": 0})
                kind["asked"] += 1
                asked += 1
                ok = answer_right(model, ids, answer, sample, None, start, n)
                right["base"] += ok
                kind["base"] += ok
                for m, s in SCORERS:
                    scores = keep_sets.scores_for(model, ids, [sample], m, s or "all-text", seed=asked)
                    for f in PRUNED_FRACTIONS:
                        name = f"{m}/{s}/{f:.3f}" if s else f"{m}/{f:.3f}"
                        keep = keep_sets.top_r(scores, keep_sets.retained(model.c, f, n))
                        ok = answer_right(model, ids, answer, sample, keep, start, n)
                        right[name] += ok
                        kind[name] += ok
            print(f"{r['id']}: {right['base']}/{asked} base, {time.time() - t0:.0f}s", flush=True)
        base = max(1, right["base"])
        print(f"\n{asked} short questions of {min(args.limit, len(records))} test scenes ({world.name}), teacher-forced "
              f"exact match: base {right['base']}/{asked} = {right['base'] / asked:.1%}")
        print("| scorer | " + " | ".join(f"{f:.1%} pruned" for f in PRUNED_FRACTIONS) + " |")
        print("|---|" + "---|" * len(PRUNED_FRACTIONS))
        for m, s in SCORERS:
            cells = [right[f"{m}/{s}/{f:.3f}" if s else f"{m}/{f:.3f}"] for f in PRUNED_FRACTIONS]
            print(f"| {m}{' ' + s if s else ''} | " + " | ".join(f"{c}/{asked} RelAcc {c / base:.1%}" for c in cells) + " |")
        print("by kind (base, then ttp all-text at the three budgets): " + "; ".join(
            f"{k} ({v['asked']}) {v['base']} " + " ".join(str(v[f'ttp/all-text/{f:.3f}']) for f in PRUNED_FRACTIONS)
            for k, v in sorted(by_kind.items())))
        desc = [0, 0, 0]
        drafts = [0, 0, 0]
        for r in records[: args.descriptions]:
            sample, _, _ = variants.model_input(model, r, args.data)
            ids = data.prompt_ids(vocab, r["describe"]["prompt"], placeholder)
            out = greedy(model.forward, ids, [sample], vocab.eos, 90)
            text = vocab.decode(out)
            if world.name == "next":
                objects = r["objects"]
                score = scenes.description_score(text, objects)
            else:
                objects = [dict(o, move=tuple(o["move"]) if o["move"] else None,
                                recolour=tuple(o["recolour"]) if o["recolour"] else None) for o in r["objects"]]
                score = clips.description_score(text, objects, len(r["frames"]))
            desc = [a + b for a, b in zip(desc, score)]
            drafts = [a + b for a, b in zip(drafts, drafting(model, ids, sample, out))]
            print(f"{r['id']}: {text!r} {score}", flush=True)
        if args.descriptions:
            print(f"descriptions of {args.descriptions} test scenes: precision {desc[0] / max(1, desc[1]):.1%}, "
                  f"recall {desc[0] / max(1, desc[2]):.1%}; drafts accepted {drafts[1]}/{drafts[0]} = "
                  f"{drafts[1] / max(1, drafts[0]):.1%}, tokens per verification "
                  f"{(drafts[1] + drafts[2]) / max(1, drafts[2]):.2f}")
    print(f"{time.time() - t0:.0f}s")
    if args.out:
        json.dump({"model": args.model, "asked": asked, "right": right, "byKind": by_kind, "descriptions": desc,
                   "drafts": drafts}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
