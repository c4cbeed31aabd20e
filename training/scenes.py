"""
The synthetic visual world of the demo model: scenes of coloured shapes on a
textured background, rendered to 96x96 PNG, with dense per-patch labels (for
pretraining the vision tower), short questions with one-to-four-word answers,
and long descriptions in several phrasings and orders.

Everything is deterministic from a seed. A scene's *key* (its objects, sizes,
colours and cells, not its pixels) decides which split it may belong to, so the
train, validation and test splits never share a scene.
"""
import hashlib
import random

from PIL import Image, ImageDraw

IMAGE_SIZE = 96
PATCH = 8
GRID = IMAGE_SIZE // PATCH  # 12 x 12 = 144 visual tokens
CELL = IMAGE_SIZE // 3  # objects sit in a 3 x 3 grid of cells

KINDS = ["circle", "square", "triangle", "cross"]
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (35, 75, 220),
    "yellow": (235, 205, 30),
    "purple": (145, 55, 185),
    "orange": (245, 135, 25),
}
COLOUR_NAMES = list(COLOURS)
SIZES = {"small": (8, 9), "large": (12, 13)}  # radius range in pixels
SIZE_NAMES = list(SIZES)
POSITIONS = [
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
]
NUMBERS = ["zero", "one", "two", "three", "four"]  # the demo model's words (its scenes hold one to four objects)
# the count words every world answers with; the NeXT variant's canvases hold up to six objects, and its vocabulary
# adds the last two (vocabulary() keeps the demo model's words and ids)
NUMBER_WORDS = NUMBERS + ["five", "six"]

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)
DESCRIBE_PROMPTS = ["describe the picture .", "describe the scene in detail .", "what do you see ?"]
# the video variant's (clips.py; its vocabulary adds their words)
VIDEO_DESCRIBE_PROMPTS = ["describe the video .", "what happens in the video ?"]


def is_description(question):
    """Whether a question asks for a description (of a picture or a video) rather than a short answer."""
    return question in DESCRIBE_PROMPTS or question in VIDEO_DESCRIBE_PROMPTS


def scene_key(objects):
    return ";".join(f"{o['cell']}:{o['size']}:{o['colour']}:{o['kind']}" for o in sorted(objects, key=lambda o: o["cell"]))


def sample_objects(rng, max_objects=None):
    counts = [1, 2, 2, 3, 3, 3, 4, 4]
    n = rng.choice(counts if max_objects is None else [c for c in counts if c <= max_objects])
    cells = rng.sample(range(9), n)
    return [
        {"cell": c, "kind": rng.choice(KINDS), "colour": rng.choice(COLOUR_NAMES), "size": rng.choice(SIZE_NAMES)}
        for c in sorted(cells)
    ]


def _background(rng, width=IMAGE_SIZE, height=IMAGE_SIZE):
    base = [rng.randint(150, 205)] * 3
    tint = rng.randrange(3)
    base[tint] = min(225, base[tint] + rng.randint(0, 18))
    img = Image.new("RGB", (width, height), tuple(base))
    d = ImageDraw.Draw(img)
    style = rng.randrange(3)
    if style == 0:  # stripes
        step = rng.randint(5, 11)
        shade = rng.choice([-1, 1]) * rng.randint(10, 22)
        col = tuple(max(0, min(255, v + shade)) for v in base)
        for x in range(-width, width * 2, step):
            d.line([(x, 0), (x + width * rng.choice([0, 1]), height)], fill=col, width=2)
    elif style == 1:  # blotches
        for _ in range(rng.randint(6, 14)):
            r = rng.randint(4, 14)
            x, y = rng.randint(0, width), rng.randint(0, height)
            shade = rng.choice([-1, 1]) * rng.randint(8, 20)
            d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(max(0, min(255, v + shade)) for v in base))
    else:  # checker
        step = rng.randint(6, 12)
        shade = rng.randint(8, 18)
        for y in range(0, height, step):
            for x in range(0, width, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=tuple(v - shade for v in base))
    # pixel noise
    px = img.load()
    for y in range(height):
        for x in range(width):
            n = rng.randint(-9, 9)
            r, g, b = px[x, y]
            px[x, y] = (r + n, g + n, b + n)
    return img


def _shape_polygon(kind, cx, cy, r):
    if kind == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if kind == "cross":
        a, b = r, r * 0.38
        return [
            (cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx + b, cy + b),
            (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b),
        ]
    raise ValueError(kind)


def draw_objects(img, objects, rng, cell_size=(CELL, CELL), centre=None):
    """Draws the objects onto img, each in the middle of its cell of the 3x3 grid of cells of cell_size (width,
    height), or at `centre(i, o)` (x, y): a radius drawn from SIZES, the centre jittered by up to 3 pixels for
    small objects and 1.5 for large ones, a colour jittered around its own. Returns a mask of the same size
    (object i + 1 on its pixels, 0 elsewhere) and each object's centre (x, y)."""
    mask = Image.new("L", img.size, 0)
    dm = ImageDraw.Draw(mask)
    d = ImageDraw.Draw(img)
    centres = []
    cw, ch = cell_size
    for i, o in enumerate(objects):
        lo, hi = SIZES[o["size"]]
        r = rng.uniform(lo, hi)
        j = 3 if o["size"] == "small" else 1.5
        x0, y0 = centre(i, o) if centre else ((o["cell"] % 3) * cw + cw / 2, (o["cell"] // 3) * ch + ch / 2)
        cx = x0 + rng.uniform(-j, j)
        cy = y0 + rng.uniform(-j, j)
        col = tuple(max(0, min(255, c + rng.randint(-14, 14))) for c in COLOURS[o["colour"]])
        if o["kind"] == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            d.ellipse(box, fill=col)
            dm.ellipse(box, fill=i + 1)
        else:
            poly = _shape_polygon(o["kind"], cx, cy, r)
            d.polygon(poly, fill=col)
            dm.polygon(poly, fill=i + 1)
        centres.append((cx, cy))
    return mask, centres


def render(objects, rng):
    """Returns (image, labels): labels per patch = (colour+1, kind+1, size+1, is_centre, cell), 0 = background
    (the cell, 0-8, is where the patch lies, so that the features carry the position a question names)."""
    img = _background(rng)
    mask, centres = draw_objects(img, objects, rng)
    centres = [(int(cy) // PATCH, int(cx) // PATCH) for cx, cy in centres]
    m = mask.load()
    labels = []
    for py in range(GRID):
        for px in range(GRID):
            counts = {}
            for y in range(py * PATCH, (py + 1) * PATCH):
                for x in range(px * PATCH, (px + 1) * PATCH):
                    v = m[x, y]
                    if v:
                        counts[v] = counts.get(v, 0) + 1
            owner = max(counts, key=counts.get) if counts else 0
            if owner and counts[owner] < PATCH * PATCH * 0.25:
                owner = 0
            if owner:
                o = objects[owner - 1]
                is_centre = int(centres[owner - 1] == (py, px))
                labels.append((COLOUR_NAMES.index(o["colour"]) + 1, KINDS.index(o["kind"]) + 1, SIZE_NAMES.index(o["size"]) + 1, is_centre))
            else:
                labels.append((0, 0, 0, 0))
            labels[-1] += ((py * PATCH // CELL) * 3 + px * PATCH // CELL,)
    return img, labels


def phrase(o, style):
    size, colour, kind, pos = o["size"], o["colour"], o["kind"], POSITIONS[o["cell"]]
    if style == 0:
        return f"a {size} {colour} {kind} at the {pos}"
    if style == 1:
        return f"at the {pos} there is a {size} {colour} {kind}"
    return f"a {colour} {kind} , {size} , at the {pos}"


def describe(objects, rng, unordered=False):
    """A description of the scene: an opener, then every object in one of two orders (from the top, from the
    bottom), each in the same one of three phrasings. With `unordered` (training only, off by default so that
    the splits' texts do not change) the objects come in a random order with no lead, so that the place after
    an object can only be read from that object and not from where the order is up to."""
    n = NUMBER_WORDS[len(objects)]
    noun = "object" if len(objects) == 1 else "objects"
    opener = rng.choice([f"there are {n} {noun} .", f"i see {n} {noun} .", f"the picture shows {n} {noun} ."])
    if len(objects) == 1:
        opener = opener.replace("there are", "there is")
    if unordered:
        objs, lead = rng.sample(list(objects), len(objects)), []
    else:
        order = rng.randrange(2)
        objs = list(objects) if order == 0 else list(reversed(objects))
        lead = ["from the top :" if order == 0 else "from the bottom :"]
    style = rng.randrange(3)
    return " ".join([opener] + lead + [phrase(o, style) + " ." for o in objs])


def parse_description(text):
    """Objects named in a description: a list of dicts with any of size, colour, kind, cell."""
    words = text.replace(",", " ").replace(":", " ").split()
    found = []
    for sentence in " ".join(words).split("."):
        ws = sentence.split()
        o = {}
        for i, w in enumerate(ws):
            if w in SIZES:
                o["size"] = w
            elif w in COLOURS:
                o["colour"] = w
            elif w in KINDS:
                o["kind"] = w
        if "the" in ws and "at" in ws:
            j = ws.index("at")
            if j + 1 < len(ws) and ws[j + 1] == "the":
                rest = ws[j + 2 : j + 4]
                for cand in (" ".join(rest), " ".join(rest[:1])):
                    if cand in POSITIONS:
                        o["cell"] = POSITIONS.index(cand)
                        break
        if o.get("kind"):
            found.append(o)
    return found


def description_score(text, objects):
    """Attribute-level precision and recall: (correct mentions, mentions, true attributes). A place named again
    scores nothing the second time (as the engine's descriptionCounts), so repeats cannot add up."""
    truth = {o["cell"]: o for o in objects}
    correct = mentioned = 0
    scored = set()
    for o in parse_description(text):
        mentioned += len(o)
        t = None if o.get("cell") in scored else truth.get(o.get("cell"))
        if t is not None:
            correct += sum(1 for k, v in o.items() if t[k] == v)
        if "cell" in o:
            scored.add(o["cell"])
    return correct, mentioned, 4 * len(objects)


def questions(objects, rng):
    """Every short question this scene supports, as (question, answer) pairs, in random order."""
    qa = []
    kinds = [o["kind"] for o in objects]
    colours = [o["colour"] for o in objects]
    for o in objects:
        if kinds.count(o["kind"]) == 1:
            qa.append((f"what colour is the {o['kind']} ?", o["colour"]))
        if colours.count(o["colour"]) == 1:
            qa.append((f"what shape is the {o['colour']} object ?", o["kind"]))
    o = rng.choice(objects)
    unique = [x for x in objects if sum(1 for y in objects if (y["colour"], y["kind"]) == (x["colour"], x["kind"])) == 1]
    if unique:
        u = rng.choice(unique)
        qa.append((f"where is the {u['colour']} {u['kind']} ?", POSITIONS[u["cell"]]))
        qa.append((f"what size is the {u['colour']} {u['kind']} ?", u["size"]))
    qa.append(("how many objects are there ?", NUMBER_WORDS[len(objects)]))
    c = rng.choice(COLOUR_NAMES if rng.random() < 0.5 else colours)
    qa.append((f"how many {c} objects are there ?", NUMBER_WORDS[colours.count(c)]))
    present = {(x["colour"], x["kind"]) for x in objects}
    if rng.random() < 0.5:
        qa.append((f"is there a {o['colour']} {o['kind']} ?", "yes"))
    else:
        while True:
            pair = (rng.choice(COLOUR_NAMES), rng.choice(KINDS))
            if pair not in present:
                break
        qa.append((f"is there a {pair[0]} {pair[1]} ?", "no"))
    cell = rng.randrange(9)
    at = [x for x in objects if x["cell"] == cell]
    qa.append(what_is_at(at[0]) if at else (f"what is at the {POSITIONS[cell]} ?", "nothing"))
    rng.shuffle(qa)
    return qa


def contrast_questions(objects, rng):
    """Extra training questions (never asked of held-out scenes) that put each answer of the kinds whose answer
    hinges on whether something is there next to its opposite about the same picture: "is there" both of an
    object it has and of a pair it lacks, "how many" of a colour it has and of one it lacks, "what is at" an
    occupied and an empty cell (when it has one). A model that answers these from the question alone is
    wrong half the time within one sample."""
    qa = []
    o = rng.choice(objects)
    present = {(x["colour"], x["kind"]) for x in objects}
    absent = [(c, k) for c in COLOUR_NAMES for k in KINDS if (c, k) not in present]
    pair = rng.choice(absent)
    qa.append((f"is there a {o['colour']} {o['kind']} ?", "yes"))
    qa.append((f"is there a {pair[0]} {pair[1]} ?", "no"))
    colours = [x["colour"] for x in objects]
    have = rng.choice(colours)
    lacking = [c for c in COLOUR_NAMES if c not in colours]  # none only in a variant's scenes of six colours
    qa.append((f"how many {have} objects are there ?", NUMBER_WORDS[colours.count(have)]))
    if lacking:
        qa.append((f"how many {rng.choice(lacking)} objects are there ?", "zero"))
    empty = [c for c in range(9) if c not in {x["cell"] for x in objects}]
    qa.append(what_is_at(o))
    if empty:
        qa.append((f"what is at the {POSITIONS[rng.choice(empty)]} ?", "nothing"))
    return qa


def what_is_at(o):
    """ "what is at" the cell of object o, and its answer."""
    return f"what is at the {POSITIONS[o['cell']]} ?", f"a {o['size']} {o['colour']} {o['kind']}"


def place_questions(objects):
    """ "what is at" every occupied cell (training only): the lookup from a place to the object there, which a
    description needs for every object it names, and which the random cell of questions() asks of an occupied
    cell only about a third of the time."""
    return [what_is_at(o) for o in objects]


def question_objects(question, objects):
    """The objects a short question is about (what its answer is read from), [] when there is none: a "no"
    to "is there", a colour no object has, an empty cell, a description."""
    w = question.rstrip(" ?").split()
    if question.startswith("what colour is the "):
        return [o for o in objects if o["kind"] == w[-1]]
    if question.startswith("what shape is the "):
        return [o for o in objects if o["colour"] == w[-2]]
    if question.startswith(("where is the ", "what size is the ", "is there a ")):
        return [o for o in objects if (o["colour"], o["kind"]) == (w[-2], w[-1])]
    if question == "how many objects are there ?":
        return list(objects)
    if question.startswith("how many "):
        return [o for o in objects if o["colour"] == w[2]]
    if question.startswith("what is at the "):
        cell = POSITIONS.index(" ".join(w[4:]))
        return [o for o in objects if o["cell"] == cell]
    return []


def sample_seed(split, index, base_seed=0):
    h = hashlib.sha256(f"{base_seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def make_scene(split, index, base_seed=0, exclude=None, max_objects=None):
    """One scene of a split; train scenes whose key is in `exclude` are redrawn. `max_objects` (a training
    curriculum) draws from the scenes with at most that many objects."""
    rng = random.Random(sample_seed(split, index, base_seed))
    while True:
        objects = sample_objects(rng, max_objects)
        if exclude is None or scene_key(objects) not in exclude:
            break
    img, labels = render(objects, rng)
    return {"objects": objects, "image": img, "labels": labels, "rng": rng}


def vocabulary():
    words = []
    def add(text):
        for w in tokenize_words(text):
            if w not in words:
                words.append(w)
    add(SYSTEM + " USER : ASSISTANT :")
    add(" ".join(KINDS + COLOUR_NAMES + SIZE_NAMES + POSITIONS + NUMBERS))
    add(" ".join(DESCRIBE_PROMPTS))
    add("what colour is the shape object where size how many objects are there is a yes no at nothing")
    add("there are i see the picture shows object objects . from top bottom : , in detail")
    return words


def tokenize_words(text):
    """The HF `Whitespace` pre-tokenizer: runs of word characters, or runs of other non-space characters."""
    import re

    return re.findall(r"\w+|[^\w\s]+", text)
