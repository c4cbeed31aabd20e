"""
Checks that packed training samples (several answers about one picture in one
sequence, data.packed_layout) give each answer exactly the logits of the
single-question prompt the model serves, so no answer sees another; and that the
base stage's FinalWipe and token-drop masks (pruning.drop_masks) take away exactly
visual tokens, found here by where the embedding holds the projector's rows; and
that every preset's phases exist and ask for supervision their samples can give.
Exits 1 if not.

  /usr/bin/python3 training/test_packing.py
"""
import math
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import answers  # noqa: E402
import anyres  # noqa: E402
import canvas  # noqa: E402
import clips  # noqa: E402
import data  # noqa: E402
import presets  # noqa: E402
import pruning  # noqa: E402
import scenes  # noqa: E402
import stage_align  # noqa: E402
import supervision  # noqa: E402
import variants  # noqa: E402
from model import Config, Llava  # noqa: E402
from PIL import Image  # noqa: E402


def main():
    torch.manual_seed(0)
    vocab = data.Vocab()
    cfg = Config(vocab=len(vocab), image_token=vocab.image, hidden=32, intermediate=48, layers=4, heads=2,
                 kv_heads=2, vision_width=32, vision_layers=2, vision_heads=2, vision_mlp=64, final_wipe_layer=3)
    model = Llava(cfg).eval()
    ids, tgt, px, metas, layout = data.batch(vocab, "train", range(4), random.Random(5), max_questions=5,
                                             description_p=1.0)
    n = cfg.num_patches
    worst, compared = 0.0, 0
    with torch.no_grad():
        packed = model(ids, px, layout=layout)
        for b, (_, turns) in enumerate(metas):
            runs = answers.answer_runs(tgt[b])
            assert len(runs) == len(turns), f"row {b}: {len(runs)} answer runs for {len(turns)} turns"
            for turn, run in zip(turns, runs):
                single_ids, mask, _ = data.encode_turns(vocab, [turn])
                single = model(torch.tensor([single_ids]), px[b : b + 1])[0]
                at = [j - 1 + n - 1 for j in range(len(single_ids)) if mask[j]]
                assert tgt[b, run].tolist() == [single_ids[j + 1 - n + 1] for j in at], "targets differ"
                worst = max(worst, (single[at] - packed[b, run]).abs().max().item())
                compared += 1
    print(f"{compared} packed answers against their single-question prompts: largest logit difference {worst:.2e}")
    if worst > 1e-5:
        print("packed turns see each other", file=sys.stderr)
        sys.exit(1)
    check_drop_masks(model, vocab, ids, px, layout, metas)
    check_label_codes(vocab)
    check_attention_targets(vocab)
    check_presets()
    check_contrast_questions(vocab)
    check_unordered_descriptions(vocab)
    check_place_questions()
    check_anyres()
    for world in variants.WORLDS.values():
        check_variant_packing(world)
    check_clips()
    check_event_weights()


def check_unordered_descriptions(vocab):
    """The training-only unordered descriptions (scenes.describe(unordered=True)) name every object of their scene
    right, in more than one order over the scenes, with no lead, and only words of the vocabulary; and the
    batches use them only when asked (unordered_p), leaving the default descriptions' texts as they were."""
    rng = random.Random(5)
    orders = set()
    for i in range(200):
        objects = scenes.make_scene("train", i)["objects"]
        text = scenes.describe(objects, rng, unordered=True)
        if scenes.description_score(text, objects) != (4 * len(objects),) * 3 or "from the" in text:
            print(f"scene {i}: unordered description {text!r} does not name its objects right", file=sys.stderr)
            sys.exit(1)
        if 0 in vocab.encode(text):  # <unk>
            print(f"scene {i}: {text!r} has words the vocabulary lacks", file=sys.stderr)
            sys.exit(1)
        if len(objects) > 1:
            orders.add(tuple(o["cell"] for o in scenes.parse_description(text)) == tuple(o["cell"] for o in objects))
    if orders != {True, False}:
        print("unordered descriptions always keep (or never keep) the scene's order", file=sys.stderr)
        sys.exit(1)
    plain = data.batch(vocab, "train", range(16), random.Random(7), description_p=1.0)[3]
    again = data.batch(vocab, "train", range(16), random.Random(7), description_p=1.0, unordered_p=0.0)[3]
    mixed = data.batch(vocab, "train", range(16), random.Random(7), description_p=1.0, unordered_p=0.5)[3]
    leads = [t[0][1].split(" . ")[1].startswith("from the") for _, t in mixed]
    if [t for _, t in plain] != [t for _, t in again] or all(leads) or not any(leads):
        print("unordered_p does not switch unordered descriptions on and off", file=sys.stderr)
        sys.exit(1)
    print(f"unordered descriptions: 200 name their objects right; {leads.count(False)} of 16 descriptions unordered at 0.5")


def check_place_questions():
    """With `places` (training only) a sample asks "what is at" every occupied cell, with the
    answer the picture gives (read through scenes.question_objects, as the evaluation reads them), on top of the
    max_questions it keeps."""
    for i in range(200):
        objects = scenes.make_scene("train", i)["objects"]
        turns = data.turns_for({"objects": objects}, random.Random(i), 12, 0.5, contrast=True, places=True)
        plain = data.turns_for({"objects": objects}, random.Random(i), 12, 0.5, contrast=True)
        at = [(q, a) for q, a in turns if q.startswith("what is at") and a != "nothing"]
        cells = sorted({scenes.POSITIONS.index(q[len("what is at the "):-2]) for q, _ in at})
        right = all(a == "a {size} {colour} {kind}".format(**scenes.question_objects(q, objects)[0]) for q, a in at)
        short = [t for t in turns if t[0] not in scenes.DESCRIBE_PROMPTS]
        extra = len(short) - sum(1 for t in plain if t[0] not in scenes.DESCRIBE_PROMPTS)
        if cells != sorted(o["cell"] for o in objects) or not right or not 0 <= extra <= len(objects):
            print(f"scene {i}: place questions {at} for objects {objects}", file=sys.stderr)
            sys.exit(1)
    print("place questions: 200 scenes ask 'what is at' every occupied cell, answered as the picture says")


def check_contrast_questions(vocab):
    """The training-only contrast questions (scenes.contrast_questions) have the answers their pictures give
    (read through scenes.question_objects, as the evaluation reads them), each sample asks "is there" both
    ways, and the base stage's per-answer loss weights (answers.answer_weights) give each short answer a total
    of 1 and each description its weight, on answer tokens only."""
    rng = random.Random(11)
    for i in range(200):
        objects = scenes.make_scene("train", i)["objects"]
        qa = scenes.contrast_questions(objects, rng)
        for q, a in qa:
            about = scenes.question_objects(q, objects)
            if q.startswith("is there"):
                want = "yes" if about else "no"
            elif q.startswith("how many"):
                want = scenes.NUMBER_WORDS[len(about)]
            else:
                o = about[0] if about else None
                want = f"a {o['size']} {o['colour']} {o['kind']}" if o else "nothing"
            if a != want:
                print(f"contrast question {q!r} of scene {i}: answer {a!r}, the picture says {want!r}",
                      file=sys.stderr)
                sys.exit(1)
        if sorted(a for q, a in qa if q.startswith("is there")) != ["no", "yes"]:
            print(f"scene {i}: the contrast questions do not ask 'is there' both ways", file=sys.stderr)
            sys.exit(1)
    ids, tgt, px, metas, _ = data.batch(vocab, "train", range(8), random.Random(3), max_questions=12,
                                        description_p=0.5, contrast=True)
    w = answers.answer_weights(tgt, metas, 6.0)
    for b, (_, turns) in enumerate(metas):
        runs = answers.answer_runs(tgt[b])
        sums = [round(w[b, run].sum().item(), 5) for run in runs]
        want = [6.0 if q in scenes.DESCRIBE_PROMPTS else 1.0 for q, _ in turns]
        if sums != want or (w[b][tgt[b] < 0] != 0).any():
            print(f"row {b}: answer weights {sums}, expected {want} and none off the answers", file=sys.stderr)
            sys.exit(1)
    print("contrast questions: 200 scenes' answers agree with their pictures, 'is there' asked both ways; "
          "per-answer loss weights sum to 1 per short answer and 6 per description")


def check_attention_targets(vocab):
    """The base stage's attention supervision (supervision.attention_targets): each target is the row that predicts
    the answer's first token, and its columns are the visual tokens of exactly the objects the answer is
    read from, which must agree with the answer itself."""
    ids, tgt, px, metas, _ = data.batch(vocab, "train", range(32), random.Random(7), max_questions=12,
                                        description_p=0.5)
    start = int((ids[0] == vocab.image).nonzero()[0, 0])
    n = scenes.GRID * scenes.GRID
    targets = {(b, row): cols for b, row, cols, _ in supervision.attention_targets(metas, tgt, start)}
    checked = 0
    for b, (s, turns) in enumerate(metas):
        objs_all = s["objects"]
        for (q, a), run in zip(turns, answers.answer_runs(tgt[b])):
            objs = scenes.question_objects(q, objs_all)
            w = q.rstrip(" ?").split()
            expect = {
                "colour": lambda: [o["colour"] for o in objs] == [a],
                "shape": lambda: [o["kind"] for o in objs] == [a],
                "where": lambda: [scenes.POSITIONS[o["cell"]] for o in objs] == [a],
                "size": lambda: [o["size"] for o in objs] == [a],
                "is": lambda: bool(objs) == (a == "yes"),
                "how": lambda: scenes.NUMBER_WORDS[len(objs)] == a,
                "at": lambda: (a == "nothing") == (not objs)
                and all(f"{o['size']} {o['colour']} {o['kind']}" in a for o in objs),
            }
            key = "at" if q.startswith("what is at") else w[1] if w[0] == "what" else w[0]
            if q in scenes.DESCRIBE_PROMPTS:
                assert (b, run[0]) not in targets, "a description got an attention target"
                continue
            assert expect[key](), f"question_objects({q!r}) gave {objs} for the answer {a!r}"
            cols = targets.get((b, run[0]), [])
            # the row predicts the answer's first token, so it is the last prompt token
            assert int(tgt[b, run[0]]) == vocab.encode(a)[0], f"{q!r}: the target row does not predict the answer"
            want = sorted(start + j for j, lab in enumerate(s["labels"])
                          if lab[0] and (scenes.COLOUR_NAMES[lab[0] - 1], scenes.KINDS[lab[1] - 1])
                          in {(o["colour"], o["kind"]) for o in objs} and lab[4] in {o["cell"] for o in objs})
            assert cols == want and all(start <= c < start + n for c in cols), f"{q!r}: columns {cols} != {want}"
            checked += 1
    # with descriptions: the rows of each phrase predict exactly that phrase's words, which name the object
    # the rows are aimed at, and every object of the scene gets its phrase
    phrases = {}
    for b, row, cols, (o,) in (t for t in supervision.attention_targets(metas, tgt, start, descriptions=True)
                               if (t[0], t[1]) not in targets):
        want = sorted(start + j for j, lab in enumerate(metas[b][0]["labels"]) if lab[0] and lab[4] == o["cell"])
        assert cols == want, f"row {b}: description target columns {cols} != {want}"
        phrases.setdefault((b, o["cell"]), (o, []))[1].append(vocab.itos[int(tgt[b, row])])
    described = 0
    for b, (s, turns) in enumerate(metas):
        if turns[0][0] not in scenes.DESCRIBE_PROMPTS:
            continue
        described += 1
        for o in s["objects"]:
            _, words = phrases.pop((b, o["cell"]))
            named = " ".join(words)
            assert all(f" {w} " in f" {named} " for w in (o["size"], o["colour"], o["kind"], scenes.POSITIONS[o["cell"]])) \
                and "." not in words, f"row {b}: the rows aimed at {o} predict {named!r}"
    assert not phrases, f"description targets for objects not in their scenes: {list(phrases)}"
    # with descriptions="opening": the short answers' targets as before, and each description's one target is
    # the row that predicts its first word (the last prompt token, TTP's query), aimed at every object's patches
    opening = {(b, row): (cols, objs) for b, row, cols, objs in
               supervision.attention_targets(metas, tgt, start, descriptions="opening")}
    assert {k: v[0] for k, v in opening.items() if k in targets} == targets, "short-answer targets changed"
    extra = {k: v for k, v in opening.items() if k not in targets}
    for b, (s, turns) in enumerate(metas):
        if turns[0][0] not in scenes.DESCRIBE_PROMPTS:
            continue
        run = answers.answer_runs(tgt[b])[0]
        cols, objs = extra.pop((b, run[0]))
        assert int(tgt[b, run[0]]) == vocab.encode(turns[0][1])[0], f"row {b}: not the description's first word"
        assert objs == s["objects"] and cols == sorted(start + j for j, lab in enumerate(s["labels"]) if lab[0]), \
            f"row {b}: the opening target is not every object"
    assert not extra, f"opening targets on rows that open no description: {list(extra)}"
    check_attention_loss()
    print(f"attention targets: {checked} short answers, each aimed at the visual tokens of the objects it is read "
          f"from, which agree with the answer; with descriptions, every object of {described} descriptions has the "
          "rows that name it aimed at it")


def check_presets():
    """Every preset's phases name presets that exist and ask for supervision their samples can give
    (supervision.unsupported); the describe phase's supervision with unordered descriptions is refused."""
    for name, p in presets.PRESETS.items():
        for phase in (name, *p.get("then", ())):
            assert phase in presets.PRESETS, f"preset {name} continues with {phase}, which is no preset"
            why = supervision.unsupported(presets.PRESETS[phase])
            assert why is None, f"preset {phase}: {why}"
    mixed = dict(presets.PRESETS["describe"], unordered_descriptions=0.25)
    assert "unordered" in (supervision.unsupported(mixed) or ""), "describe's supervision with unordered descriptions"
    print(f"{len(presets.PRESETS)} presets: every phase exists and its supervision fits its samples")


def check_attention_loss():
    """supervision.attention_loss: the heads' mean (head None) is what it scores, and with the patch labels each asked
    object counts apart, so attention on one of two objects costs more than the same mass shared by both."""
    labels = [[(0, 0, 0, 0, 9)] * 4 + [(1, 1, 1, 1, 0)] * 2 + [(2, 2, 1, 1, 8)] * 2]
    objs = [{"cell": 0}, {"cell": 8}]
    probs = torch.zeros(1, 2, 1, 8)
    one, both = probs.clone(), probs.clone()
    one[0, :, 0, 4:6] = 0.3
    both[0, :, 0, [4, 6]] = 0.3
    target = [(0, 0, [4, 5, 6, 7], objs)]
    for p in (one, both):
        loss, mass = supervision.attention_loss(p, target, None)
        assert abs(mass - 0.6) < 1e-6 and abs(loss.item() + math.log(0.6)) < 1e-4, (loss, mass)
    split = [supervision.attention_loss(p, target, None, labels)[0].item() for p in (one, both)]
    assert split[0] > split[1] + 5 and abs(split[1] + math.log(0.3)) < 1e-4, split
    mixed = both.clone()
    mixed[0, 1] = 0.0  # one head looks away: the mean halves
    assert abs(supervision.attention_loss(mixed, target, None)[1] - 0.3) < 1e-6
    assert abs(supervision.attention_loss(mixed, target, 0)[1] - 0.6) < 1e-6


def check_drop_masks(model, vocab, ids, px, layout, metas):
    """FinalWipe takes away exactly the visual tokens; pruning keeps R of them: at random, or (with the
    samples' patch labels, the demo preset's prune_keep="objects") the objects' centre patches first, then
    their other patches, then background."""
    # the budgets R of the demo model's depth (57, 34, 11 of 144), so that R is both above and below an
    # object count
    c = Config(**{**model.c.to_dict(), "layers": 32, "final_wipe_layer": 24})
    with torch.no_grad():
        feats = model.projector(model.vision(px))
        emb = model.embed(ids, px)
    start = int((ids[0] == vocab.image).nonzero()[0, 0])
    r_values = {pruning.retained(c, f) for f in pruning.PRUNED_FRACTIONS}
    labels = [m["labels"] for m, _ in metas]
    visuals = [{j for j in range(emb.shape[1]) if any(torch.equal(emb[b, j], f) for f in feats[b])}
               for b in range(ids.shape[0])]
    for b, visual in enumerate(visuals):
        assert len(visual) == c.num_patches, f"row {b}: {len(visual)} visual rows in the embedding"
    for keep_labels in (None, labels):
        mid, late = pruning.drop_masks(c, layout[1], start, random.Random(1), wipe_p=1.0, prune_p=1.0,
                                     labels=keep_labels)
        for b, visual in enumerate(visuals):
            base = torch.isinf(layout[1][b, 0, -1])  # the last row: causal and turn masking only
            wiped = {int(j) for j in (torch.isinf(late[b, 0, -1]) & ~base).nonzero().flatten()}
            pruned = {int(j) for j in (torch.isinf(mid[b, 0, -1]) & ~base).nonzero().flatten()}
            if wiped != visual or not pruned <= visual or c.num_patches - len(pruned) not in r_values:
                print(f"row {b}: the drop masks take away other columns than the visual tokens", file=sys.stderr)
                sys.exit(1)
            if keep_labels is None:
                continue
            kept = {j - start for j in visual - pruned}
            centres = {j for j, lab in enumerate(labels[b]) if lab[3]}
            objects = {j for j, lab in enumerate(labels[b]) if lab[0]}
            r = len(kept)
            ok = (centres <= kept if r >= len(centres) else kept <= centres) and (
                objects <= kept if r >= len(objects) else kept <= objects)
            if not ok:
                print(f"row {b}: pruning by objects kept {sorted(kept)}, not the objects' patches first",
                      file=sys.stderr)
                sys.exit(1)
    print(f"drop masks: FinalWipe takes away exactly the {c.num_patches} visual tokens of each row, pruning "
          f"keeps R of them ({sorted(r_values)}), the objects' centres and then their other patches first "
          "when it prunes by objects")


def check_label_codes(vocab):
    """The align stage's targets (stage_align.label_codes): each label is read back exactly from the sum of codes."""
    _, labels = data.vision_batch("train", range(4))
    cfg = Config(vocab=len(vocab), image_token=vocab.image, hidden=96)
    codes = stage_align.label_codes(cfg)
    read = stage_align.decode_labels(codes, stage_align.code_targets(codes, labels))
    if not torch.equal(read, labels):
        print("label codes: the labels are not read back from their own codes", file=sys.stderr)
        sys.exit(1)
    print(f"label codes: all {labels.shape[0] * labels.shape[1]} patches' labels read back from their codes")


def check_anyres():
    """AnyRes as transformers does it: the grid each canvas size gets, the token count of every size the NeXT
    world draws (base view, unpadded grid rows, one newline per row), tiles that are the canvas's own pixels
    where no resize happens, black padding, and labels laid out as the features are."""
    pins = [list(p) for p in canvas.PINPOINTS]
    # (height, width) -> the pinpoint transformers picks
    for size, want in (((96, 192), (96, 192)), ((192, 96), (192, 96)), ((144, 192), (192, 192)),
                       ((192, 128), (192, 192)), ((100, 400), (96, 288)), ((50, 60), (96, 192))):
        got = anyres.select_best_resolution(size, pins)
        assert got == want, f"{size}: {got}, expected {want}"
    sizes = {(w, h) for short in canvas.SHORT_SIDES for w, h in ((192, short), (short, 192))}
    for w, h in sorted(sizes):
        rows, cols = anyres.get_anyres_image_grid_shape((h, w), pins, canvas.TILE)
        grid = anyres.unpad_image(torch.zeros(1, rows * 12, cols * 12), (h, w))
        # the unpadded grid covers the canvas at the tiles' scale (1:1 here): its own size in patches
        assert tuple(grid.shape[1:]) == (h // 8, w // 8), (w, h, grid.shape)
        n = anyres.token_count((h, w), pins, canvas.TILE, 12)
        assert n == 144 + grid.shape[1] * (grid.shape[2] + 1), (w, h, n)
    img = Image.fromarray((np.random.RandomState(0).rand(96, 192, 3) * 255).astype(np.uint8))
    px, size = anyres.preprocess(img, pins, 96)
    assert size == (96, 192) and px.shape == (3, 3, 96, 96)
    assert torch.equal(px[1], data.pixels(img.crop((0, 0, 96, 96)))) and torch.equal(px[2], data.pixels(img.crop((96, 0, 192, 96))))
    assert torch.equal(px[0], data.pixels(img.resize((96, 96), Image.BICUBIC)))
    tall = img.resize((192, 144), Image.BICUBIC)
    px, size = anyres.preprocess(tall, pins, 96)
    black = data.pixels(Image.new("RGB", (96, 96)))[:, 0, 0]
    assert px.shape[0] == 5 and torch.equal(px[1][:, 0, 0], black) and torch.equal(px[1][:, 24, 0], data.pixels(tall.crop((0, 0, 96, 96)))[:, 0, 0])
    checked = 0
    for i in range(6):
        s = canvas.make_scene("val", i)
        w, h = s["size"]
        rows, cols = anyres.get_anyres_image_grid_shape((h, w), pins, 96)
        grid = anyres.unpad_image(torch.zeros(1, rows * 12, cols * 12), (h, w))
        newlines = [144 + (r + 1) * (grid.shape[2] + 1) - 1 for r in range(grid.shape[1])]
        assert len(s["labels"]) == s["num_visual"] == 144 + grid.shape[1] * (grid.shape[2] + 1)
        assert all(s["labels"][j] == (0, 0, 0, 0, canvas.NO_PLACE) for j in newlines)
        for o in s["objects"]:
            seen = [j for j, lab in enumerate(s["labels"]) if lab[0] and lab[4] == o["cell"]]
            # in the tiles always; in the base view (half scale) a small object may cover no patch's quarter
            assert any(j >= 144 for j in seen) and (o["size"] == "small" or any(j < 144 for j in seen)), \
                f"scene {i}: {o} is missing from a view"
            checked += 1
    print(f"anyres: grids and token counts of {len(sizes)} canvas sizes, tiles, base view and padding as transformers "
          f"makes them; {checked} objects labelled in the tiles (the large ones in the base view too)")


def check_variant_packing(world):
    """A variant's packed samples, rows of different numbers of visual tokens in one batch, give each answer the
    logits of its single-question prompt; the drop masks take away exactly each row's visual tokens."""
    torch.manual_seed(0)
    base = Config(vocab=82, hidden=32, intermediate=48, layers=4, heads=2, kv_heads=2, vision_width=32,
                  vision_layers=2, vision_heads=2, vision_mlp=64, final_wipe_layer=3)
    vocab = variants.vocab_for(world)
    model = variants.adopt(Llava(base), variants.config_for(base, world, vocab)).eval()
    ids, tgt, px, metas, layout = data.batch(vocab, "train", range(4), random.Random(5), max_questions=5,
                                             description_p=1.0, world=world)
    worst, compared = 0.0, 0
    with torch.no_grad():
        packed = model(ids, px, layout=layout)
        for b, (s, turns) in enumerate(metas):
            nv = s["num_visual"]
            for turn, run in zip(turns, answers.answer_runs(tgt[b])):
                single_ids, mask, _ = data.encode_turns(vocab, [turn], world.placeholder(vocab))
                single = model(torch.tensor([single_ids]), px[b : b + 1])[0]
                at = [j - 1 + nv - 1 for j in range(len(single_ids)) if mask[j]]
                assert tgt[b, run].tolist() == [single_ids[j + 1 - nv + 1] for j in at], "targets differ"
                worst = max(worst, (single[at] - packed[b, run]).abs().max().item())
                compared += 1
    counts = [s["num_visual"] for s, _ in metas]
    start = int((ids[0] == world.placeholder(vocab)).nonzero()[0, 0])
    mid, late = pruning.drop_masks(model.c, layout[1], start, random.Random(1), 1.0, 1.0,
                                   [s["labels"] for s, _ in metas], counts)
    for b, n in enumerate(counts):
        before = torch.isinf(layout[1][b, 0, -1])
        wiped = {int(j) for j in (torch.isinf(late[b, 0, -1]) & ~before).nonzero().flatten()}
        kept = n - int((torch.isinf(mid[b, 0, -1]) & ~before).sum())
        assert wiped == set(range(start, start + n)), f"row {b}: FinalWipe took other columns"
        assert kept in {pruning.retained(model.c, f, n) for f in pruning.PRUNED_FRACTIONS}, f"row {b}: kept {kept}"
    if worst > 1e-5 or len(set(counts)) < 2:
        print(f"{world.name}: packed turns differ from single prompts by {worst} (visual tokens {counts})",
              file=sys.stderr)
        sys.exit(1)
    print(f"{world.name}: {compared} packed answers in rows of {counts} visual tokens against their single-question "
          f"prompts: largest logit difference {worst:.2e}; drop masks take each row's own visual tokens")


def check_clips():
    """Clips: the reference description scores perfectly, every question is answered as its clip shows, and the
    tokens an answer is read from are the right objects in the right frames."""
    checked = 0
    for i in range(60):
        c = clips.make_clip("train", i)
        f, objs = c["frames"], c["objects"]
        assert len(c["labels"]) == c["num_visual"] == f * 36 and c["pixels"].shape == (f, 3, 96, 96)
        score = clips.description_score(c["description"], objs, f)
        assert score[0] == score[1] == score[2], (c["description"], score)
        for q, a, pairs in c["questions"]:
            frame = 0 if "first frame" in q else f - 1
            shown = clips.in_frame(objs, frame)
            if q.startswith("how many objects are there"):
                assert a == scenes.NUMBER_WORDS[len(shown)]
            elif q.startswith("is there a"):
                w = q.split()
                assert (a == "yes") == any((o["colour"], o["kind"]) == (w[3], w[4]) for o in shown)
            elif q == "which object moves ?":
                assert (a == "nothing") == (not any(o.get("move") for o in objs))
            cols = clips.WORLD.question_columns(c, q, 0)
            if pairs:
                assert cols and all(c["labels"][j][5] - 1 in {p[0] for p in pairs} for j in cols[0])
            checked += 1
    print(f"clips: 60 reference descriptions score perfectly; {checked} questions agree with their clips and "
          "point at their objects' tokens")


def check_event_weights():
    """The clips' event questions are the ones clips.EVENT_QUESTIONS names; a phase's clip_frames and curriculum
    give clips of those frames and at most that many objects at first; with event_weight an event question's
    answer weighs that much (1 for the others, a description its weight) and with first_token_share its first
    token that share of it."""
    world = clips.WORLD
    vocab = variants.vocab_for(world)
    for i in range(60):
        for q, _, _ in clips.make_clip("train", i)["questions"]:
            about_change = q.startswith("which object") or q in ("how many objects appear ?",
                                                                  "how many objects disappear ?")
            assert world.is_event_question(q) == about_change, q
    ids, tgt, px, metas, _ = data.batch(vocab, "train", range(8), random.Random(4), max_questions=12,
                                        description_p=0.5, max_objects=2, world=world, frames=4)
    for s, _ in metas:
        assert s["frames"] == 4 and sum(o["start"] == 0 for o in s["objects"]) <= 2, (s["frames"], s["objects"])
    w = answers.answer_weights(tgt, metas, 6.0, 0.5, 3.0, world.is_event_question)
    events = 0
    for b, (_, turns) in enumerate(metas):
        runs = answers.answer_runs(tgt[b])
        for (q, _), run in zip(turns, runs):
            want = 6.0 if scenes.is_description(q) else 3.0 if world.is_event_question(q) else 1.0
            events += world.is_event_question(q)
            assert abs(w[b, run].sum().item() - want) < 1e-5, (q, w[b, run].tolist())
            if not scenes.is_description(q) and len(run) > 1:
                assert abs(w[b, run[0]].item() - want / 2) < 1e-6, (q, w[b, run].tolist())
        assert (w[b][tgt[b] < 0] == 0).all()
    assert events > 0, "no event question in the batch"
    print(f"event weights: 8 clips of 4 frames and at most 2 objects at first; {events} event answers weigh 3, "
          "their first token half of it; the other short answers 1, descriptions 6")


if __name__ == "__main__":
    main()
