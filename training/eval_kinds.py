"""
Held-out short-answer accuracy by question kind of a training run's base checkpoint
(or its twig's draft path), from PyTorch: a quick check while training runs, before
an export and the engine's eval.

  /usr/bin/python3 training/eval_kinds.py --run training/runs/NAME | --model DIR [--stage twig] [--scenes 150]
                                          [--descriptions 40] [--selection 30] [--binding 50] [--pruned 30]
                                          [--pruned-fraction 0.889] [--places 40]

With --descriptions N it also describes N validation pictures greedily and prints the descriptions'
attribute precision and recall (scenes.description_score, as the engine's eval scores them) and, keyed
the same way by the place each object is named at, how many named sizes, colours and kinds are wrong
and how many of those repeat the object named just before.
With --binding N it checks whether a description binds a place to the object it has just named (binding()).
With --pruned N it answers every short question of N validation scenes greedily with 11 visual tokens
(88.9% pruned; --pruned-fraction 0.778 or 0.667 for 34 or 57) kept in base layers K+1..K_f, chosen by each
scorer of --selection and by two oracles that read the scene's patch labels: the asked objects' patches first,
or every object's (the order the base stage's pruned samples keep, pruning.keep_order); so it tells whether TTP
loses accuracy to what it keeps or to the trunk.
With --places N it checks the lookup from a place to the object there (places()).
With --selection N it shows what TTP would keep on N test pictures: for four prompts (SELECTION_PROMPTS),
the share of the last prompt token's visual attention (heads' mean) that falls on the patches of the objects
the answer needs (every object for a description), how many of those objects keep a patch among the top R,
and how many of the top R are their patches (R of each of the three budgets), scored by the twig's last
layer (TTP), by base layer K (FastV) and by base layer K+T (the twig's last layer before its training; a run
with no twig.pt yet scores its twig as that untrained copy too).
"""
import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cores import use_cores  # noqa: E402
import data  # noqa: E402
import scenes  # noqa: E402
from answers import accuracy_by_kind  # noqa: E402
from checkpoints import base_checkpoint, load_exported, load_run  # noqa: E402
from keep_sets import pruned_forward  # noqa: E402
from model import greedy  # noqa: E402
from pruning import PRUNED_FRACTIONS, keep_order, retained  # noqa: E402
from supervision import object_columns  # noqa: E402
from variants import vocab_for, world_of  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a training run: its last base phase's checkpoint and (with --stage twig) its twig")
    src.add_argument("--model", help="an exported model directory instead (its base model and twig), such as "
                     "models/demo")
    ap.add_argument("--stage", default="base", choices=["base", "twig"])
    ap.add_argument("--checkpoint", help="a checkpoint file other than the run's own last base phase")
    ap.add_argument("--scenes", type=int, default=150)
    ap.add_argument("--descriptions", type=int, default=0)
    ap.add_argument("--selection", type=int, default=0)
    ap.add_argument("--binding", type=int, default=0)
    ap.add_argument("--pruned", type=int, default=0)
    ap.add_argument("--places", type=int, default=0)
    budgets = ", ".join(f"{f:.3f}" for f in PRUNED_FRACTIONS)
    ap.add_argument("--pruned-fraction", type=float, default=PRUNED_FRACTIONS[-1],
                    help=f"the share of visual tokens --pruned prunes: one of the three budgets ({budgets})")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # the budget it names, exactly (0.778 is 7/9 to three places)
    fraction = min(PRUNED_FRACTIONS, key=lambda f: abs(f - args.pruned_fraction))
    if abs(fraction - args.pruned_fraction) > 0.01:
        ap.error(f"--pruned-fraction must be one of the three budgets ({budgets}), got {args.pruned_fraction}")
    if args.model and args.checkpoint:
        ap.error("--checkpoint replaces a run's base checkpoint; it does not go with --model")
    use_cores(args.threads)
    if args.model:
        model = load_exported(args.model)
        print(f"{args.stage}, the exported model {args.model}")
    else:
        if args.stage == "twig" and not os.path.exists(os.path.join(args.run, "twig.pt")):
            sys.exit(f"{args.run} has no twig.pt")
        model, info = load_run(args.run)
        path = args.checkpoint or base_checkpoint(args.run)
        base = torch.load(path)
        if args.checkpoint:
            model.load_state_dict(base["weights"], strict=False)
        # a run started with --init-from and no base stage takes the exported model as its base checkpoint
        print(f"{args.stage}, base model from {path}: " + (f"the exported {base['init_from']}" if base.get("init_from")
                                                          else f"step {base['step']}"))
    forward = model.twig_forward if args.stage == "twig" else model.forward
    # a variant's run (video, next) is scored on its own world's scenes with its own vocabulary
    world = world_of(info["schedule"].get("world")) if not args.model else None
    if args.scenes:
        by = accuracy_by_kind(model, vocab_for(world), forward, args.scenes, world)
        right, asked = sum(r for r, _ in by.values()), sum(a for _, a in by.values())
        print(f"{right}/{asked} = {right / asked:.1%} of short answers right")
        for k, (r, a) in by.items():
            print(f"  {k:32s} {r:4d}/{a:<4d} {r / a:6.1%}")
    if args.descriptions:
        describe(model, forward, args.descriptions)
    if args.selection:
        selection(model, args.selection)
    if args.pruned:
        pruned(model, args.pruned, fraction)
    if args.binding:
        binding(model, forward, args.binding)
    if args.places:
        places(model, forward, args.places)


def describe(model, forward, n, max_tokens=90):
    """Greedy descriptions of n validation pictures (vocab.decode drops the </s>)."""
    vocab = data.Vocab()
    model.eval()
    correct = mentioned = truth = 0
    named = empty = 0
    wrong = {k: 0 for k in ("size", "colour", "kind")}
    copied = dict(wrong)
    with torch.no_grad():
        for i in range(n):
            s = scenes.make_scene("val", i)
            ids = data.prompt_ids(vocab, scenes.DESCRIBE_PROMPTS[i % 3])
            out = greedy(forward, ids, data.pixels(s["image"])[None], vocab.eos, max_tokens)
            text = vocab.decode(out)
            c, m, t = scenes.description_score(text, s["objects"])
            correct, mentioned, truth = correct + c, mentioned + m, truth + t
            # Each named object against the scene's object at the place it names, as description_score
            # keys them: which attributes are wrong, and whether a wrong one repeats the object named before.
            at = {o["cell"]: o for o in s["objects"]}
            before = None
            for o in scenes.parse_description(text):
                named += 1
                t_o = at.get(o.get("cell"))
                if t_o is None:
                    empty += 1
                else:
                    for k in wrong:
                        if o.get(k) != t_o[k]:
                            wrong[k] += 1
                            copied[k] += before is not None and o.get(k) == before.get(k)
                before = o
    print(f"descriptions of {n} pictures: precision {correct / max(1, mentioned):.1%}, recall "
          f"{correct / max(1, truth):.1%}")
    placed = named - empty
    print(f"  {named} objects named, {empty} at a place with no object or none; of the other {placed}, wrong "
          + ", ".join(f"{k} {wrong[k]} ({wrong[k] / max(1, placed):.0%}; {copied[k]} as the object named before)"
                      for k in wrong))


def binding(model, forward, n):
    """Does a description put the object it has just named at that object's place, or at the place that
    comes next in its order? On the first n validation scenes of two or more objects, for each order, the
    first object is forced (its size, colour and kind, then "at the") either in order or out of order (the
    second in that order), and the greedy place that follows is compared with the two objects' places."""
    vocab = data.Vocab()
    model.eval()
    counts = {}
    i = done = 0
    with torch.no_grad():
        while done < n:
            s = scenes.make_scene("val", i)
            i += 1
            objs = s["objects"]
            if len(objs) < 2:
                continue
            done += 1
            ids = data.prompt_ids(vocab, scenes.DESCRIBE_PROMPTS[i % 3])
            px = data.pixels(s["image"])[None]
            opener = f"there are {scenes.NUMBER_WORDS[len(objs)]} objects . "
            for lead, seq in (("from the top :", objs), ("from the bottom :", objs[::-1])):
                for which, o in (("in order", seq[0]), ("out of order", seq[1])):
                    forced = vocab.encode(f"{opener}{lead} a {o['size']} {o['colour']} {o['kind']} at the")
                    out = greedy(forward, ids + forced, px, vocab.eos, 2)
                    cell = scenes.parse_description(vocab.decode(forced + out))[0].get("cell", -1)
                    c = counts.setdefault((lead, which), [0, 0])
                    c[0] += cell == o["cell"]
                    c[1] += which == "out of order" and cell == seq[0]["cell"]
    print(f"binding on {n} scenes of two or more objects: the place said after a forced first object")
    for (lead, which), (own, first) in counts.items():
        tail = f", the place of the object due first {first}" if which == "out of order" else ""
        print(f"  {lead:18s} object named {which:12s}: its own place {own}/{n}{tail}")


def places(model, forward, n):
    """The lookup from a place to the object there, twice, on the first n validation scenes: asked as a short
    question of every occupied cell ("what is at the top left ?"), and inside a description of two or more
    objects whose first phrase is forced to start with its place ("there are three objects . from the top :
    at the"), in both orders. For the second it says whose attributes follow: the object due (the one at the
    place named), another one, or a mix; and how often the place named is the one due."""
    vocab = data.Vocab()
    model.eval()
    asked = right = 0
    parts = {"size": 0, "colour": 0, "kind": 0}
    forced = {}
    with torch.no_grad():
        for i in range(n):
            s = scenes.make_scene("val", i)
            objs, px = s["objects"], data.pixels(s["image"])[None]
            for o in objs:
                question, answer = scenes.what_is_at(o)
                got = vocab.decode(greedy(forward, data.prompt_ids(vocab, question), px, vocab.eos, 5)).split()
                want = answer.split()
                asked, right = asked + 1, right + (got == want)
                for j, k in enumerate(parts, 1):
                    parts[k] += len(got) > j and got[j] == want[j]
            if len(objs) < 2:
                continue
            ids = data.prompt_ids(vocab, scenes.DESCRIBE_PROMPTS[i % 3])
            for lead, seq in (("from the top :", objs), ("from the bottom :", objs[::-1])):
                prefix = f"there are {scenes.NUMBER_WORDS[len(objs)]} objects . {lead} at the"
                out = greedy(forward, ids + vocab.encode(prefix), px, vocab.eos, 12)
                named = scenes.parse_description("at the " + vocab.decode(out).split(".")[0] + " .")
                g = named[0] if named else {}
                whose = [o for o in objs if all(g.get(k) == o[k] for k in parts)]
                c = ("the object due" if whose and whose[0] is seq[0] else "another object" if whose
                     else "a mix or none")
                c = ("the place due, " if g.get("cell") == seq[0]["cell"] else "another place, ") + c
                forced[c] = forced.get(c, 0) + 1
    print(f"what is at an occupied cell, {asked} asked on {n} validation scenes: {right} ({right / asked:.1%}) right; "
          + ", ".join(f"{k} {v / asked:.0%}" for k, v in parts.items()))
    total = sum(forced.values())
    print(f"first phrase of a description forced to start with a place ({total}, both orders): the place named, "
          "then whose attributes")
    for c, v in sorted(forced.items(), key=lambda x: -x[1]):
        print(f"  {c:40s} {v:4d} ({v / total:.0%})")


def last_attention(layers, x, tables, mask):
    """The heads' mean attention probabilities of the last of `layers` [S, S], after running them all."""
    for layer in layers[:-1]:
        x = layer(x, tables, mask)
    return layers[-1](x, tables, mask, want_probs=True)[1][0].mean(0)


def scorer_layers(model):
    """Each scorer's layers, by name: the last one's attention from the last prompt token ranks the visual tokens."""
    k, t = model.c.twig_k, model.c.twig_t
    return {"twig (TTP)": list(model.layers[:k]) + list(model.twig.layers), f"base layer {k} (FastV)":
            list(model.layers[:k]), f"base layer {k + t}": list(model.layers[: k + t])}


SELECTION_PROMPTS = ("how many objects are there ?", "describe the picture .", "what colour is the circle ?",
                     "how many red objects are there ?")


def selection(model, n):
    """What each scorer's top R visual tokens hold on n test pictures (see the module's doc)."""
    c, vocab = model.c, data.Vocab()
    scorers = scorer_layers(model)
    rs = [retained(c, f) for f in PRUNED_FRACTIONS]
    print(f"selection on {n} test pictures: the share of the visual attention on the patches of the objects the "
          f"answer needs; of those objects, how many keep a patch in the top R; and how many of the top R are their "
          f"patches (R = {', '.join(map(str, rs))})")
    with torch.no_grad():
        for q in SELECTION_PROMPTS:
            ids = data.prompt_ids(vocab, q)
            start = ids.index(vocab.image)
            tally = {name: [0.0, 0] + [0] * (2 * len(rs)) for name in scorers}
            pictures = 0
            for i in range(n):
                s = scenes.make_scene("test", i)
                needed = s["objects"] if q in scenes.DESCRIBE_PROMPTS else scenes.question_objects(q, s["objects"])
                if not needed:
                    continue
                pictures += 1
                x = model.embed(torch.tensor([ids]), data.pixels(s["image"])[None])
                tables, mask = model.layout(x.shape[1], None)
                each = [set(object_columns(s["labels"], [o], 0)) for o in needed]
                on = set().union(*each)
                for name, layers in scorers.items():
                    score = last_attention(layers, x, tables, mask)[-1, start : start + c.num_patches]
                    tally[name][0] += float(score[sorted(on)].sum() / score.sum())
                    tally[name][1] += len(needed)
                    for m, r in enumerate(rs):
                        top = set(score.topk(r).indices.tolist())
                        tally[name][2 + m] += sum(1 for cols in each if cols & top)
                        tally[name][2 + len(rs) + m] += len(top & on)
            print(f"  {q} ({pictures} pictures)")
            for name, (share, objects, *counts) in tally.items():
                covered, patches = counts[: len(rs)], counts[len(rs) :]
                print(f"    {name:22s} attention {share / max(1, pictures):5.1%}   objects kept " + "  ".join(
                    f"{m}/{objects}" for m in covered) + "   top R on them " + "  ".join(
                    f"{kept / (r * max(1, pictures)):5.1%}" for r, kept in zip(rs, patches)))


def pruned(model, n, fraction=PRUNED_FRACTIONS[-1]):
    """Short answers at a budget (88.9% pruned by default) with the visual tokens kept by each scorer and by two
    oracles (module doc)."""
    c, vocab = model.c, data.Vocab()
    k, num = c.twig_k, c.num_patches
    r = retained(c, fraction)
    scorers = scorer_layers(model)
    names = ["full"] + list(scorers) + ["oracle: asked objects first", "oracle: every object first"]
    right, asked = dict.fromkeys(names, 0), 0
    by = {}
    rng = random.Random(0)

    def answer(ids, px, start, keep, max_tokens):
        """Greedy answer with only `keep` of the visual tokens in base layers K+1..K_f and none after (None: all)."""
        return greedy(pruned_forward(model, keep, start, num), ids, px, vocab.eos, max_tokens)

    model.eval()
    with torch.no_grad():
        for i in range(n):
            s = scenes.make_scene("val", i)
            px = data.pixels(s["image"])[None]
            for q, a in scenes.questions(s["objects"], random.Random(i)):
                ids = data.prompt_ids(vocab, q)
                start = ids.index(vocab.image)
                want = vocab.encode(a) + [vocab.eos]
                x = model.embed(torch.tensor([ids]), px)
                tables, mask = model.layout(x.shape[1], None)
                keeps = {"full": None}
                for name, layers in scorers.items():
                    score = last_attention(layers, x, tables, mask)[-1, start : start + num]
                    keeps[name] = set(score.topk(r).indices.tolist())
                cells = {o["cell"] for o in scenes.question_objects(q, s["objects"])}
                keeps["oracle: asked objects first"] = set(keep_order(s["labels"], rng, cells)[:r])
                keeps["oracle: every object first"] = set(keep_order(s["labels"], rng)[:r])
                asked += 1
                kind = by.setdefault(" ".join(q.split()[:2]), dict.fromkeys(names, 0) | {"asked": 0})
                kind["asked"] += 1
                for name in names:
                    ok = answer(ids, px, start, keeps[name], len(want)) == want
                    right[name] += ok
                    kind[name] += ok
    print(f"{asked} short questions of {n} validation scenes, {r} of {num} visual tokens kept in base layers "
          f"{k + 1}-{c.final_wipe_layer} (none after), greedy exact answers (RelAcc against the full model):")
    for name in names:
        print(f"  {name:30s} {right[name]:4d}/{asked}  {right[name] / asked:6.1%}  "
              f"RelAcc {right[name] / right['full']:6.1%}")
    print("  by kind (in that order): " + "; ".join(
        f"{kd} ({v['asked']}) " + " ".join(str(v[nm]) for nm in names) for kd, v in by.items()))


if __name__ == "__main__":
    main()
