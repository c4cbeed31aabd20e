"""
What the TypeScript engine must reproduce on an exported variant (LLaVA-NeXT or LLaVA-NeXT-Video), from
PyTorch: for a few committed test scenes (NeXT: a landscape, a portrait, a square and a padded canvas; video: a
4-frame and an 8-frame clip) and two prompts each (a short question and the description prompt):
  OUT (JSON)                   one case per scene and prompt (fields below)
  OUT_DIR/parity/SCENE.safetensors  pixel_values (NeXT [1 + tiles, 3, 96, 96] from anyres.preprocess; video
                               [frames, 3, 96, 96]) and visual_features [N, hidden] (what replaces the
                               placeholder: NeXT's packed tokens with image_newline rows, video's pooled frames)
A case: images (PNG paths under --data, a clip's frames in order), question, inputIds (the single placeholder
id at placeholderIndex), imageSize [height, width] (NeXT), bestResolution, grid [rows, cols] and unpaddedGrid
[rows, cols] of patches (NeXT), frames and tokensPerFrame (video), numVisualTokens, pixelSum and featureSum
(float64 sums), logits and twigLogits (the last prompt position, full path and draft path), greedyIds and
greedyText (no KV cache), kept: for ttp and fastv by last-token and all-text, and visionzip, at each of the
three budgets (pruned 0.667, 0.778, 0.889) R and the kept indices (keep_sets.py), and for the short question
prunedGreedyIds: ttp (all-text) at each budget, the greedy answer with only those tokens in base layers
K+1..K_f and none after.

  /usr/bin/python3 training/parity_variants.py --model models/demo-next --out models/demo-next/parity.json
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cores import use_cores  # noqa: E402
import data  # noqa: E402
import keep_sets  # noqa: E402
import scenes  # noqa: E402
import variants  # noqa: E402
from checkpoints import load_exported, write_safetensors  # noqa: E402
from model import greedy  # noqa: E402
from pruning import PRUNED_FRACTIONS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# the committed test scenes a fixture takes: the first of each canvas size (width, height), or clip length
NEXT_SIZES = {"landscape": (192, 96), "portrait": (128, 192), "square": (192, 192), "padded": (192, 144)}
VIDEO_FRAMES = {"4 frames": 4, "8 frames": 8}


def pick(records, world):
    """(label, record) for each kind of scene a fixture covers."""
    out = []
    for label, want in (NEXT_SIZES if world == "next" else VIDEO_FRAMES).items():
        got = next(r for r in records if (tuple(r["size"]) if world == "next" else len(r["frames"])) == want)
        out.append((label, got))
    return out


def case(model, vocab, world, label, record, question, short, data_dir, tensors, max_tokens):
    """One fixture case (module doc); writes its tensors."""
    sample, px, fields = variants.model_input(model, record, data_dir)
    placeholder = world.placeholder(vocab)
    ids = data.prompt_ids(vocab, question, placeholder)
    feats = model.visual_features([sample])[0]
    ids_t = torch.tensor([ids])
    full = model(ids_t, [sample])[0, -1]
    twig = model.twig_forward(ids_t, [sample])[0, -1]
    out = greedy(model.forward, ids, [sample], vocab.eos, max_tokens)
    name = f"{record['id']}-{'short' if short else 'describe'}"
    write_safetensors(os.path.join(tensors, record["id"] + ".safetensors"), {"pixel_values": px, "visual_features": feats})
    start, n = ids.index(placeholder), feats.shape[0]
    kept = {}
    for mode, sources in (("ttp", ("last-token", "all-text")), ("fastv", ("last-token", "all-text")),
                          ("visionzip", (None,))):
        for source in sources:
            key = mode if source is None else f"{mode}/{source}"
            kept[key] = {}
            for f in PRUNED_FRACTIONS:
                r, keep = keep_sets.kept(model, ids, [sample], mode, f, source or "all-text")
                kept[key][f"{f:.3f}"] = {"R": r, "indices": keep}
    result = dict(fields, id=name, scene=label, question=question, inputIds=ids, placeholderIndex=start,
                  numVisualTokens=n, tensors=f"parity/{record['id']}.safetensors", pixelSum=float(px.double().sum()),
                  featureSum=float(feats.double().sum()), logits=full.tolist(), twigLogits=twig.tolist(),
                  greedyIds=out, greedyText=vocab.decode(out), kept=kept)
    if short:
        result["prunedGreedyIds"] = {
            f"ttp/all-text/{f:.3f}": greedy(keep_sets.pruned_forward(model, kept["ttp/all-text"][f"{f:.3f}"]["indices"],
                                                                     start, n), ids, [sample], vocab.eos, 8)
            for f in PRUNED_FRACTIONS}
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    use_cores(args.threads)
    model = load_exported(args.model)
    if model.c.variant == "llava":
        sys.exit(f"{args.model} is not a variant: use parity.py")
    world = variants.WORLDS[model.c.variant]
    vocab = variants.vocab_for(world)
    split = f"{world.name}-test"
    records = [json.loads(line) for line in open(os.path.join(args.data, f"{split}.jsonl"))]
    tensors = os.path.join(os.path.dirname(os.path.abspath(args.out)), "parity")
    os.makedirs(tensors, exist_ok=True)
    cases = []
    with torch.no_grad():
        for label, record in pick(records, world.name):
            prompt = scenes.DESCRIBE_PROMPTS[0] if world.name == "next" else scenes.VIDEO_DESCRIBE_PROMPTS[0]
            for question, short in ((record["questions"][0]["question"], True), (prompt, False)):
                cases.append(case(model, vocab, world, label, record, question, short, args.data, tensors,
                                  args.max_tokens))
                print(f"{cases[-1]['id']}: {cases[-1]['numVisualTokens']} visual tokens, {cases[-1]['greedyText']!r}",
                      flush=True)
    json.dump({"model": os.path.basename(os.path.abspath(args.model)), "variant": model.c.variant,
               "maxTokens": args.max_tokens, "budgets": [round(f, 3) for f in PRUNED_FRACTIONS], "cases": cases},
              open(args.out, "w"), indent=1)
    print(f"wrote {len(cases)} parity cases to {args.out}")


if __name__ == "__main__":
    main()
