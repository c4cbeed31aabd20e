"""
Writes a split of the synthetic task to disk: OUT/SPLIT/NNNN.png and OUT/SPLIT.jsonl,
one JSON object per scene with its objects, its short questions and answers, and
a description prompt with a reference description.

  /usr/bin/python3 training/gen_data.py --split test --count 200 --out training/data
  /usr/bin/python3 training/gen_data.py --world next --split test --count 100 --out training/data
  /usr/bin/python3 training/gen_data.py --world video --split test --count 100 --videos 4 --out training/data

The same (split, index) always gives the same scene; train scenes never share a
scene key with the first 4000 scenes of val or test (see data.held_out_keys).

With --world next: the NeXT variant's canvases (canvas.py) as OUT/next-SPLIT/NNNN.png and OUT/next-SPLIT.jsonl
(each record adds the canvas "size", [width, height]). With --world video: the video variant's clips (clips.py)
as frame lists, OUT/video-SPLIT/NNNN/FF.png, and OUT/video-SPLIT.jsonl (each record: "frames", the frame files
in order, the objects with their events, short questions and the reference description); --videos N also
writes the first N clips as NNNN.mp4 (H.264) and NNNN.webm (VP9) beside their frames (lossy, as a client's
files are; the frames are the lossless reference).
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import canvas  # noqa: E402
import clips  # noqa: E402
import data  # noqa: E402
import scenes  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True, choices=["train", "val", "test"])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--questions", type=int, default=3, help="short questions per scene")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--world", choices=["next", "video"], help="a variant's world instead of the demo's")
    ap.add_argument("--videos", type=int, default=0, help="with --world video: the first N clips as MP4 and WebM too")
    args = ap.parse_args()
    if args.world:
        return write_variant(args)
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


def write_variant(args):
    """A variant's split (module doc)."""
    world = canvas.WORLD if args.world == "next" else clips.WORLD
    split = f"{args.world}-{args.split}"
    exclude = world.held_out_keys() if args.split == "train" else None
    os.makedirs(os.path.join(args.out, split), exist_ok=True)
    with open(os.path.join(args.out, f"{split}.jsonl"), "w") as f:
        for i in range(args.count):
            s = world.make_scene(args.split, i, exclude=exclude)
            record = {"id": f"{split}-{i:04d}"}
            if args.world == "next":
                name = f"{split}/{i:04d}.png"
                s["image"].save(os.path.join(args.out, name), optimize=True)
                rng = random.Random(f"eval:{split}:{i}")
                qa = scenes.questions(s["objects"], rng)[: args.questions]
                record.update(image=name, size=list(s["size"]),
                              objects=[{**o, "position": scenes.POSITIONS[o["cell"]]} for o in s["objects"]],
                              describe={"prompt": scenes.DESCRIBE_PROMPTS[0],
                                        "reference": scenes.describe(s["objects"], rng)})
            else:
                os.makedirs(os.path.join(args.out, split, f"{i:04d}"), exist_ok=True)
                names = [f"{split}/{i:04d}/{k:02d}.png" for k in range(s["frames"])]
                for name, im in zip(names, s["images"]):
                    im.save(os.path.join(args.out, name), optimize=True)
                if i < args.videos:
                    record["videos"] = [clips.write_video(s["images"], os.path.join(args.out, f"{split}/{i:04d}.{ext}"))
                                        [len(args.out) + 1 :] for ext in ("mp4", "webm")]
                qa = [(q, a) for q, a, _ in s["questions"]][: args.questions]
                record.update(frames=names, objects=[
                    {**o, "position": scenes.POSITIONS[o["cell"]], "move": o.get("move"), "recolour": o.get("recolour")}
                    for o in s["objects"]], describe={"prompt": scenes.VIDEO_DESCRIBE_PROMPTS[0],
                                                      "reference": s["description"]})
            record["questions"] = [{"question": q, "answer": a} for q, a in qa]
            f.write(json.dumps(record) + "\n")
    print(f"wrote {args.count} {split} scenes to {args.out}")


if __name__ == "__main__":
    main()
