"""
Writes a split of the synthetic task to disk: OUT/SPLIT/NNNN.png and OUT/SPLIT.jsonl,
one JSON object per scene with its objects, its short questions and answers, and
a description prompt with a reference description.

  /usr/bin/python3 training/gen_data.py --split test --count 200 --out training/data

The same (split, index) always gives the same scene; train scenes never share a
scene key with the first 4000 scenes of val or test (see data.held_out_keys).
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import scenes  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True, choices=["train", "val", "test"])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--questions", type=int, default=3, help="short questions per scene")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    args = ap.parse_args()
    exclude = data.held_out_keys() if args.split == "train" else None
    os.makedirs(os.path.join(args.out, args.split), exist_ok=True)
    with open(os.path.join(args.out, f"{args.split}.jsonl"), "w") as f:
        for i in range(args.count):
            s = scenes.make_scene(args.split, i, exclude=exclude)
            name = f"{args.split}/{i:04d}.png"
            s["image"].save(os.path.join(args.out, name), optimize=True)
            rng = random.Random(f"eval:{args.split}:{i}")
            qa = scenes.questions(s["objects"], rng)[: args.questions]
            record = {
                "id": f"{args.split}-{i:04d}",
                "image": name,
                "objects": [{**o, "position": scenes.POSITIONS[o["cell"]]} for o in s["objects"]],
                "questions": [{"question": q, "answer": a} for q, a in qa],
                "describe": {"prompt": scenes.DESCRIBE_PROMPTS[0], "reference": scenes.describe(s["objects"], rng)},
            }
            f.write(json.dumps(record) + "\n")
    print(f"wrote {args.count} {args.split} scenes to {args.out}")


if __name__ == "__main__":
    main()
