"""
The video variant's world: short clips (4 to 8 frames of 96x96) of the demo world in which, between frames,
objects appear, disappear, move to another cell and change colour, with questions about the clip and
descriptions of it.

A clip starts from a demo scene's objects (one to four, scenes.sample_objects) on a background that stays
still; one to three events follow, each from a frame on: at most one object moves and at most one changes
colour, up to two appear and up to two disappear; no object has two events, no cell is used by two objects in
one clip, and at most four objects are present in any frame. Each object keeps its radius, jitter and colour
jitter through the clip (its own seed), so frames differ only where an event is.

Model input: each frame's pixels (data.pixels), [frames, 3, 96, 96]; the model pools each frame's 12x12 patch
features to 6x6 (LLaVA-NeXT-Video's average pooling, stride 2) and lays the frames out one after the other, so
a clip takes 36 visual tokens per frame. Labels, one per visual token in that order: (colour+1, kind+1, size+1,
is_centre, cell, object id + 1, frame), 0s and the token's cell on background (pooled tokens take the object
that owns most of their four patches).

Clips can be written as MP4 (H.264) or WebM (VP9) with ffmpeg (write_video), and read back (read_video).
"""
import os
import random
import subprocess

import numpy as np
import torch
from PIL import Image

import data
import scenes

FRAMES = (4, 5, 6, 7, 8)
POOL = 2
SIDE = scenes.GRID // POOL  # pooled tokens per side of a frame
MAX_PRESENT = 4
FIRST, LAST = "first", "last"

# the words the clip questions and descriptions add to the demo vocabulary (in this order, after <image>), and
# the <video> placeholder after them
TEMPLATES = ("which object moves ? which object appears ? which object disappears ? which object changes colour ? "
             "how many objects appear ? how many objects disappear ? in the first frame in the last frame "
             "there is then a small red circle appears at the top . the circle disappears . moves to the "
             "right . turns blue . " + " ".join(scenes.VIDEO_DESCRIBE_PROMPTS))
EXTRA_WORDS = tuple(dict.fromkeys(w for w in scenes.tokenize_words(TEMPLATES) if w not in scenes.vocabulary()))


def _free_cells(objects):
    used = {o["cell"] for o in objects} | {o["move"][1] for o in objects if o.get("move")}
    return [c for c in range(9) if c not in used]


def present(o, f):
    """Whether object o is in frame f."""
    return o["start"] <= f < o["end"]


def state(o, f):
    """Object o as frame f shows it: its cell and colour after any move or colour change by then."""
    cell = o["move"][1] if o.get("move") and f >= o["move"][0] else o["cell"]
    colour = o["recolour"][1] if o.get("recolour") and f >= o["recolour"][0] else o["colour"]
    return {"id": o["id"], "kind": o["kind"], "size": o["size"], "colour": colour, "cell": cell}


def in_frame(objects, f):
    """The objects of frame f, as it shows them, in id order."""
    return [state(o, f) for o in objects if present(o, f)]


def draw_events(rng, objects, frames):
    """One to three events (module doc), recorded on the objects (start, end, move, recolour); new objects are
    appended."""
    kinds = {"appear": 2, "disappear": 2, "move": 1, "recolour": 1}
    for _ in range(rng.choice([1, 1, 2, 2, 3])):
        t = rng.randrange(1, frames)
        calm = [o for o in objects if not (o.get("move") or o.get("recolour") or o["start"] or o["end"] < frames)]
        options = [k for k, left in kinds.items() if left and (k == "appear" or calm)]
        k = rng.choice(options)
        if k == "appear":
            free = _free_cells(objects)
            if not free or any(sum(present(o, f) for o in objects) >= MAX_PRESENT for f in range(t, frames)):
                continue
            o = {"id": len(objects), "cell": rng.choice(free), "kind": rng.choice(scenes.KINDS),
                 "colour": rng.choice(scenes.COLOUR_NAMES), "size": rng.choice(scenes.SIZE_NAMES),
                 "start": t, "end": frames}
            objects.append(o)
        else:
            o = rng.choice(calm)
            if k == "disappear":
                o["end"] = t
            elif k == "move":
                free = _free_cells(objects)
                if not free:
                    continue
                o["move"] = (t, rng.choice(free))
            else:
                o["recolour"] = (t, rng.choice([c for c in scenes.COLOUR_NAMES if c != o["colour"]]))
        kinds[k] -= 1
    return objects


def clip_key(objects, frames):
    return f"{frames};" + ";".join(f"{o['cell']}:{o['size']}:{o['colour']}:{o['kind']}:{o['start']}:{o['end']}:"
                                   f"{o.get('move')}:{o.get('recolour')}" for o in objects)


def sample_clip(rng, frames=None, max_objects=None):
    """A clip's objects and events, and its number of frames."""
    frames = frames or rng.choice(FRAMES)
    objects = [dict(o, id=i, start=0, end=frames) for i, o in enumerate(scenes.sample_objects(rng, max_objects))]
    return draw_events(rng, objects, frames), frames


def render(objects, frames, rng):
    """The frames (PIL images) and their object masks (uint8 arrays, object id + 1)."""
    background = scenes._background(rng)
    seeds = [rng.random() for _ in objects]
    images, masks = [], []
    for f in range(frames):
        img = background.copy()
        mask = np.zeros((scenes.IMAGE_SIZE, scenes.IMAGE_SIZE), dtype=np.uint8)
        for o in objects:
            if present(o, f):
                m, _ = scenes.draw_objects(img, [state(o, f)], random.Random(seeds[o["id"]]))
                mask[np.asarray(m) > 0] = o["id"] + 1
        images.append(img)
        masks.append(mask)
    return images, masks


def token_labels(objects, frames, masks):
    """Labels of every visual token (module doc), frame after frame, each frame's 6x6 pooled tokens row by row."""
    out = []
    for f in range(frames):
        shown = {o["id"]: state(o, f) for o in objects if present(o, f)}
        centres = {}
        for i in shown:
            ys, xs = np.nonzero(masks[f] == i + 1)
            if len(ys):
                centres[i] = (int(ys.mean()) // (8 * POOL), int(xs.mean()) // (8 * POOL))
        for py in range(SIDE):
            for px in range(SIDE):
                owners = []
                for dy in range(POOL):
                    for dx in range(POOL):
                        y0, x0 = (py * POOL + dy) * 8, (px * POOL + dx) * 8
                        counts = np.bincount(masks[f][y0 : y0 + 8, x0 : x0 + 8].flatten(), minlength=len(objects) + 1)
                        counts[0] = 0
                        if counts.max() >= 16:
                            owners.append(int(counts.argmax()))
                cell = (py * POOL * 8 // scenes.CELL) * 3 + px * POOL * 8 // scenes.CELL
                if owners:
                    i = max(set(owners), key=owners.count) - 1
                    o = shown[i]
                    out.append((scenes.COLOUR_NAMES.index(o["colour"]) + 1, scenes.KINDS.index(o["kind"]) + 1,
                                scenes.SIZE_NAMES.index(o["size"]) + 1, int(centres.get(i) == (py, px)), o["cell"],
                                i + 1, f))
                else:
                    out.append((0, 0, 0, 0, cell, 0, f))
    return out


def phrase(o):
    return f"a {o['size']} {o['colour']} {o['kind']}"


# the questions about what changes between frames (questions() below); the others read one frame
EVENT_QUESTIONS = ("which object moves ?", "which object changes colour ?", "which object appears ?",
                   "which object disappears ?", "how many objects appear ?", "how many objects disappear ?")


def frame_of(which, frames):
    return 0 if which == FIRST else frames - 1


def questions(objects, frames, rng):
    """Every short question the clip supports, as (question, answer, targets) with targets the (object id,
    frame) pairs the answer is read from, in random order."""
    qa = []
    movers = [o for o in objects if o.get("move")]
    recoloured = [o for o in objects if o.get("recolour")]
    came = [o for o in objects if o["start"] > 0]
    gone = [o for o in objects if o["end"] < frames]

    def frames_of(o):
        return [(o["id"], f) for f in range(frames) if present(o, f)]

    qa.append(("which object moves ?", phrase(state(movers[0], 0)) if movers else "nothing",
               frames_of(movers[0]) if movers else []))
    qa.append(("which object changes colour ?", f"a {recoloured[0]['size']} {recoloured[0]['kind']}" if recoloured
               else "nothing", frames_of(recoloured[0]) if recoloured else []))
    for verb, those, at in (("appears", came, lambda o: o["start"]), ("disappears", gone, lambda o: o["end"] - 1)):
        if len(those) < 2:
            qa.append((f"which object {verb} ?", phrase(state(those[0], at(those[0]))) if those else "nothing",
                       frames_of(those[0]) if those else []))
        qa.append((f"how many objects {verb[:-1]} ?", scenes.NUMBER_WORDS[len(those)],
                   [t for o in those for t in frames_of(o)]))
    for which in (FIRST, LAST):
        f = frame_of(which, frames)
        shown = in_frame(objects, f)
        qa.append((f"how many objects are there in the {which} frame ?", scenes.NUMBER_WORDS[len(shown)],
                   [(o["id"], f) for o in shown]))
        kinds = [o["kind"] for o in shown]
        unique = [o for o in shown if kinds.count(o["kind"]) == 1]
        if unique:
            o = rng.choice(unique)
            qa.append((f"what colour is the {o['kind']} in the {which} frame ?", o["colour"], [(o["id"], f)]))
        pairs = [(o["colour"], o["kind"]) for o in shown]
        unique = [o for o in shown if pairs.count((o["colour"], o["kind"])) == 1]
        if unique:
            o = rng.choice(unique)
            qa.append((f"where is the {o['colour']} {o['kind']} in the {which} frame ?", scenes.POSITIONS[o["cell"]],
                       [(o["id"], f)]))
    last = in_frame(objects, frames - 1)
    if rng.random() < 0.5 and last:
        o = rng.choice(last)
        qa.append((f"is there a {o['colour']} {o['kind']} in the last frame ?", "yes", [(o["id"], frames - 1)]))
    else:
        have = {(o["colour"], o["kind"]) for o in last}
        pair = rng.choice([(c, k) for c in scenes.COLOUR_NAMES for k in scenes.KINDS if (c, k) not in have])
        qa.append((f"is there a {pair[0]} {pair[1]} in the last frame ?", "no", []))
    rng.shuffle(qa)
    return qa


def describe(objects, frames, rng):
    """The clip told in order: the first frame's objects (from the top), then each event in frame order (and
    in object order within a frame)."""
    first = in_frame(objects, 0)
    n = scenes.NUMBER_WORDS[len(first)]
    opener = (f"in the first frame there is {n} object ." if len(first) == 1
              else f"in the first frame there are {n} objects .")
    style = rng.randrange(3)
    parts = [opener] + [scenes.phrase(o, style) + " ." for o in first]
    events = []
    for o in objects:
        if o["start"]:
            events.append((o["start"], o["id"], f"then {phrase(state(o, o['start']))} appears at the "
                                                f"{scenes.POSITIONS[o['cell']]} ."))
        if o["end"] < frames:
            events.append((o["end"], o["id"], f"then the {phrase(state(o, o['end'] - 1))[2:]} disappears ."))
        if o.get("move"):
            t, cell = o["move"]
            events.append((t, o["id"], f"then the {phrase(state(o, t - 1))[2:]} moves to the {scenes.POSITIONS[cell]} ."))
        if o.get("recolour"):
            t, colour = o["recolour"]
            events.append((t, o["id"], f"then the {phrase(state(o, t - 1))[2:]} turns {colour} ."))
    return " ".join(parts + [e for _, _, e in sorted(events)])


def parse_events(text):
    """The events a description names after its first "then": (kind, size, colour, shape, target) each, the
    target a cell (appears, moves) or a colour (turns) or None (disappears)."""
    out = []
    for sentence in text.split(" then ")[1:]:
        w = sentence.replace(".", " ").split()
        attrs = [x for x in w if x in scenes.SIZES], [x for x in w if x in scenes.COLOURS], [x for x in w if x in scenes.KINDS]
        size, colour, kind = (a[0] if a else None for a in attrs)
        verb = next((v for v in ("appears", "disappears", "moves", "turns") if v in w), None)
        target = None
        if verb in ("appears", "moves") and "the" in w[w.index(verb):]:
            rest = w[w.index(verb):]
            place = " ".join(rest[rest.index("the") + 1 :])
            target = scenes.POSITIONS.index(place) if place in scenes.POSITIONS else -1
        elif verb == "turns" and len(attrs[1]) > 1:
            target = attrs[1][1]
        out.append((verb, size, colour, kind, target))
    return out


def true_events(objects, frames):
    """The clip's events as parse_events names them."""
    out = []
    for o in objects:
        if o["start"]:
            out.append(("appears", o["size"], o["colour"], o["kind"], o["cell"]))
        if o["end"] < frames:
            out.append(("disappears", o["size"], state(o, o["end"] - 1)["colour"], o["kind"], None))
        if o.get("move"):
            out.append(("moves", o["size"], o["colour"], o["kind"], o["move"][1]))
        if o.get("recolour"):
            out.append(("turns", o["size"], o["colour"], o["kind"], o["recolour"][1]))
    return out


def description_score(text, objects, frames):
    """(correct, mentioned, true): the first frame's objects scored attribute by attribute keyed by place, as
    scenes.description_score scores a picture's, plus each event named after "then" (right when its kind,
    object and target are all right; an event named twice scores once) against the clip's events."""
    c, m, t = scenes.description_score(text.split(" then ")[0], in_frame(objects, 0))
    truth = true_events(objects, frames)
    named = parse_events(text)
    right = len(set(named) & set(truth))
    return c + right, m + len(named), t + len(truth)


def make_clip(split, index, base_seed=0, exclude=None, max_objects=None, frames=None):
    """One clip of a split (its own seeds), redrawn while its key is in `exclude`: {objects (with their events),
    frames (how many), images, pixels [frames, 3, 96, 96], labels, num_visual, questions, description}."""
    rng = random.Random(scenes.sample_seed("clip-" + split, index, base_seed))
    while True:
        objects, n = sample_clip(rng, frames, max_objects)
        if exclude is None or clip_key(objects, n) not in exclude:
            break
    images, masks = render(objects, n, rng)
    labels = token_labels(objects, n, masks)
    return {"objects": objects, "frames": n, "images": images, "labels": labels, "num_visual": len(labels),
            "pixels": torch.stack([data.pixels(im) for im in images]),
            "questions": questions(objects, n, rng), "description": describe(objects, n, rng)}


def token_columns(labels, pairs, start):
    """The visual columns of the tokens that show the given (object id, frame) pairs."""
    want = set(pairs)
    return [start + j for j, lab in enumerate(labels) if lab[5] and (lab[5] - 1, lab[6]) in want]


def write_video(images, path, fps=2):
    """Writes frames (PIL images) as a video with ffmpeg: .mp4 as H.264 (yuv420p), .webm as VP9; lossy, as a
    client's file would be. Returns the path."""
    codec = {".mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12"],
             ".webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "12", "-b:v", "0"]}[os.path.splitext(path)[1]]
    w, h = images[0].size
    raw = b"".join(im.convert("RGB").tobytes() for im in images)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", str(fps), "-i", "-"] + codec + [path], input=raw, check=True)
    return path


def read_video(path, size=scenes.IMAGE_SIZE):
    """Every frame of a video file, decoded by ffmpeg to RGB, as PIL images of size x size."""
    out = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", f"{size}x{size}", "-"], capture_output=True, check=True).stdout
    n = len(out) // (size * size * 3)
    return [Image.frombytes("RGB", (size, size), out[i * size * size * 3 : (i + 1) * size * size * 3]) for i in range(n)]


class World:
    """The clip world as data.batch and the training stages use it."""

    name = "video"
    extra_words = EXTRA_WORDS
    extra_specials = ("<video>",)

    @staticmethod
    def placeholder(vocab):
        return vocab.stoi["<video>"]

    @staticmethod
    def make_scene(split, index, exclude=None, max_objects=None, frames=None):
        return make_clip(split, index, exclude=exclude, max_objects=max_objects, frames=frames)

    @staticmethod
    def is_event_question(question):
        """Whether a short question asks about an event (what changes between frames), not one frame."""
        return question in EVENT_QUESTIONS

    @staticmethod
    def turns_for(clip, rng, max_questions, description_p, contrast=False, unordered_p=0.0, places=False):
        """Up to max_questions of the clip's questions, and its description first with probability
        description_p (contrast, unordered_p and places are the demo world's and do nothing here)."""
        qa = [(q, a) for q, a, _ in clip["questions"]]
        rng.shuffle(qa)
        qa = qa[:max_questions]
        if rng.random() < description_p:
            qa.insert(0, (rng.choice(scenes.VIDEO_DESCRIBE_PROMPTS), clip["description"]))
        return qa

    @staticmethod
    def question_columns(clip, question, start):
        """(columns, per-object columns) an answer is read from: the tokens of the (object, frame) pairs the
        question is about (every object in every frame for a description); None when there are none."""
        if scenes.is_description(question):
            pairs = [(o["id"], f) for o in clip["objects"] for f in range(clip["frames"]) if present(o, f)]
        else:
            pairs = next(t for q, _, t in clip["questions"] if q == question)
        cols = token_columns(clip["labels"], pairs, start)
        if not cols:
            return None
        ids = sorted({i for i, _ in pairs})
        each = [c for c in (token_columns(clip["labels"], [p for p in pairs if p[0] == i], start) for i in ids) if c]
        return cols, each

    @staticmethod
    def held_out_keys(base_seed=0):
        """The keys of the first held-out clips of each split, which training never draws."""
        return data.held_out_keys(base_seed, "clip-", lambda rng: clip_key(*sample_clip(rng)))


WORLD = World()
