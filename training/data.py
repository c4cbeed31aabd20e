"""
Token sequences for training: the demo model's prompt format (its chat template,
shipped in tokenizer_config.json) is
    <s>USER: <image>\n{question} ASSISTANT: {answer}</s>USER: {question} ASSISTANT: {answer}</s>...
A training sample is one scene with several answers (a description, when there
is one, and short questions), so the 144 visual tokens are paid once for several
supervised answers. The answers are packed as independent turns: each turn
    {question} ASSISTANT: {answer}</s>
sees the shared prefix <s>USER: <image> and itself only (an attention mask), and
its positions restart right after the image, so every turn is exactly the
single-question prompt the model serves. (Turns that saw each other let the model
answer from earlier answers: a description names every object's colour and shape,
and a model trained so copied text instead of binding words to patches.) Loss
falls on answer tokens and their </s>.
The vision and align stages take labelled pictures instead (vision_batch).
"""
import random

import numpy as np
import torch
from PIL import Image

import scenes

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
HELD_OUT = ("val", "test")
HELD_OUT_COUNT = 4000  # scenes per held-out split whose keys train never uses
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


class Vocab:
    """The word-level vocabulary: the specials, the demo world's words, <image>, then (for a variant) its extra
    words and extra placeholders such as <video>, appended so that every demo id keeps its meaning."""

    def __init__(self, extra_words=(), extra_specials=()):
        words = scenes.vocabulary()
        assert not set(extra_words) & set(words), "an extra word the demo vocabulary has already"
        self.itos = SPECIALS + words + ["<image>"] + list(extra_words) + list(extra_specials)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.bos, self.eos, self.pad = 1, 2, 3
        self.image = self.stoi["<image>"]
        self.specials = SPECIALS + ["<image>"] + list(extra_specials)
        self.placeholders = {self.stoi[t] for t in ["<image>"] + list(extra_specials)}

    def encode(self, text):
        return [self.stoi.get(w, 0) for w in scenes.tokenize_words(text)]

    def decode(self, ids):
        return " ".join(self.itos[i] for i in ids if i > 3 and i not in self.placeholders)

    def __len__(self):
        return len(self.itos)


def held_out_keys(base_seed=0, prefix="", draw=None):
    """The keys of the first HELD_OUT_COUNT scenes of each held-out split, which training never draws: the demo
    world's, or a variant's whose seeds take `prefix` before the split and whose `draw(rng)` draws a key."""
    keys = set()
    for split in HELD_OUT:
        for i in range(HELD_OUT_COUNT):
            rng = random.Random(scenes.sample_seed(prefix + split, i, base_seed))
            keys.add(draw(rng) if draw else scenes.scene_key(scenes.sample_objects(rng)))
    return keys


def expand2square(img, fill):
    """LLaVA's pad to a square: the picture on a square of colour `fill`, centred (offsets rounded down)."""
    w, h = img.size
    if w == h:
        return img
    out = Image.new(img.mode, (max(w, h), max(w, h)), fill)
    out.paste(img, ((h - w) // 2, 0) if h > w else (0, (w - h) // 2))
    return out


def square_image(img, size=scenes.IMAGE_SIZE):
    """LLaVA-1.5's image preprocessing up to the 8-bit pixels (image_aspect_ratio "pad", then the CLIP processor's
    resize): RGB as PIL's convert makes it (alpha dropped, grey and palette expanded), padded to a square with the
    CLIP mean colour as LLaVA writes it (int(mean * 255)), then resized to size x size, bicubic. A picture that is
    already size x size RGB comes back unchanged (the scenes of training)."""
    img = expand2square(img.convert("RGB"), tuple(int(m * 255) for m in MEAN.tolist()))
    return img if img.size == (size, size) else img.resize((size, size), Image.BICUBIC)


def pixels(img, size=scenes.IMAGE_SIZE):
    """The model's input for a picture: square_image, rescaled to [0, 1] and normalised with the CLIP mean/std,
    float32 [3, size, size]. Training, evaluation and the parity fixtures all go through here."""
    a = (np.asarray(square_image(img, size), dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def vision_batch(split, indices, exclude=None):
    """Pictures [B, 3, H, W] of a split's scenes and their per-patch labels [B, N, 5] (scenes.render), for the
    vision and align stages."""
    px, labels = [], []
    for i in indices:
        s = scenes.make_scene(split, i, exclude=exclude)
        px.append(pixels(s["image"]))
        labels.append(torch.tensor(s["labels"]))
    return torch.stack(px), torch.stack(labels)  # labels [B, N, 5]


def turns_for(scene, rng, max_questions, description_p, contrast=False, unordered_p=0.0, places=False):
    """A scene's turns: up to max_questions of its short questions (with `contrast`, training only, the
    scene's contrast questions join them first; with `places`, training only, "what is at" every occupied
    cell joins them after the cut: scenes.place_questions), and a description first with probability
    description_p (with probability unordered_p, training only, a description in a random order:
    scenes.describe)."""
    qa = scenes.questions(scene["objects"], rng)
    if contrast:
        qa = scenes.contrast_questions(scene["objects"], rng) + qa
        rng.shuffle(qa)
    qa = qa[:max_questions]
    if places:
        asked = {q for q, _ in qa}
        qa += [t for t in scenes.place_questions(scene["objects"]) if t[0] not in asked]
        rng.shuffle(qa)
    if rng.random() < description_p:
        unordered = unordered_p > 0 and rng.random() < unordered_p
        qa.insert(0, (rng.choice(scenes.DESCRIBE_PROMPTS), scenes.describe(scene["objects"], rng, unordered)))
    return qa


def prompt_ids(vocab, question, placeholder=None):
    """The ids of the single-question prompt the model serves: <s>USER: <image>{question} ASSISTANT: (a variant
    may name another placeholder, such as <video>'s id)"""
    placeholder = vocab.image if placeholder is None else placeholder
    return [vocab.bos] + vocab.encode("USER:") + [placeholder] + vocab.encode(question) + vocab.encode("ASSISTANT:")


def encode_turns(vocab, turns, placeholder=None):
    """ids, a loss mask (1 on answer tokens and their </s>) and each token's turn (0 = the shared prefix
    <s>USER: <image>, k = turn k)."""
    ids = [vocab.bos] + vocab.encode("USER:") + [vocab.image if placeholder is None else placeholder]
    mask, turn = [0] * len(ids), [0] * len(ids)
    for k, (q, a) in enumerate(turns, 1):
        user = vocab.encode(q) + vocab.encode("ASSISTANT:")
        ans = vocab.encode(a) + [vocab.eos]
        ids += user + ans
        mask += [0] * len(user) + [1] * len(ans)
        turn += [k] * (len(user) + len(ans))
    return ids, mask, turn


def batch(vocab, split, indices, rng, exclude=None, max_questions=5, description_p=0.5, single_turn=False,
          max_objects=None, contrast=False, unordered_p=0.0, places=False, world=None, frames=None):
    """(input_ids [B,S], targets [B,S'] with -100 off-answer, pixels, scenes, layout); S' = S - 1 + N (the
    longest row's, with a variant's numbers of visual tokens per row); layout = (positions [B,S'], additive
    attention mask [B,1,S',S']) of the packed turns. pixels: [B,3,H,W] for the demo world, or the list of each
    scene's model input for a variant's `world` (canvas.WORLD, clips.WORLD), whose scenes also say how many
    visual tokens they take (num_visual) and which token each label belongs to."""
    seqs, px, metas, num_visual = [], [], [], []
    for i in indices:
        if world is None:
            s = scenes.make_scene(split, i, exclude=exclude, max_objects=max_objects)
            turns = turns_for(s, rng, 1 if single_turn else max_questions, description_p, contrast, unordered_p,
                              places)
            px.append(pixels(s["image"]))
        else:
            # frames: a clip world's number of frames (None: its own mix)
            s = world.make_scene(split, i, exclude=exclude, max_objects=max_objects,
                                 **({} if frames is None else {"frames": frames}))
            turns = world.turns_for(s, rng, 1 if single_turn else max_questions, description_p, contrast,
                                    unordered_p, places)
            px.append(s["pixels"])
            num_visual.append(s["num_visual"])
        seqs.append(encode_turns(vocab, turns, world and world.placeholder(vocab)))
        metas.append((s, turns))
    if world is None:
        ids, tgt, px = collate(vocab, seqs, torch.stack(px))
        return ids, tgt, px, metas, packed_layout(seqs)
    ids, tgt, _ = collate(vocab, seqs, None, num_visual, world.placeholder(vocab))
    return ids, tgt, px, metas, packed_layout(seqs, num_visual)


def collate(vocab, seqs, px, num_visual=scenes.GRID * scenes.GRID, placeholder=None):
    """Token ids padded to one width, and the targets of the spliced sequences (the placeholder expanded to its
    visual tokens: num_visual of them, or a list with each row's)."""
    rows = num_visual if isinstance(num_visual, list) else [num_visual] * len(seqs)
    placeholder = vocab.image if placeholder is None else placeholder
    width = max(len(ids) for ids, *_ in seqs)
    ids_t = torch.full((len(seqs), width), vocab.pad, dtype=torch.long)
    tgt = torch.full((len(seqs), width - 1 + max(rows)), -100, dtype=torch.long)
    for b, ((ids, mask, *_), nv) in enumerate(zip(seqs, rows)):
        ids_t[b, : len(ids)] = torch.tensor(ids)
        at = ids.index(placeholder)
        # position j of the spliced sequence predicts token j+1
        for j in range(1, len(ids)):
            if mask[j]:
                sj = j - 1 + (nv - 1 if j > at else 0)
                tgt[b, sj] = ids[j]
    return ids_t, tgt, px


def packed_layout(seqs, num_visual=scenes.GRID * scenes.GRID):
    """Positions and attention mask of the spliced sequences (the image token expanded to N, or to each row's
    own number with a list): a token sees the earlier tokens of the shared prefix and of its own turn; each
    turn's positions start where the prefix ends. Padding is a turn of its own."""
    rows = num_visual if isinstance(num_visual, list) else [num_visual] * len(seqs)
    width = max(len(ids) for ids, *_ in seqs) - 1 + max(rows)
    positions = torch.zeros(len(seqs), width, dtype=torch.long)
    turns = torch.full((len(seqs), width), -1, dtype=torch.long)
    for b, ((ids, _, turn), nv) in enumerate(zip(seqs, rows)):
        at = turn.count(0) - 1  # the prefix ends with the image token
        spliced = turn[:at] + [0] * nv + turn[at + 1 :]
        prefix = at + nv
        turns[b, : len(spliced)] = torch.tensor(spliced)
        pos, last = [], {}
        for j, t in enumerate(spliced):
            if t == 0:
                pos.append(j)
            else:
                last[t] = last.get(t, prefix - 1) + 1
                pos.append(last[t])
        positions[b, : len(pos)] = torch.tensor(pos)
        positions[b, len(pos):] = torch.arange(prefix, prefix + width - len(pos))
    turns[turns < 0] = 1 << 20
    same = (turns[:, :, None] == turns[:, None, :]) | (turns[:, None, :] == 0)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = same & causal
    mask = torch.zeros(len(seqs), 1, width, width).masked_fill_(~allowed[:, None], float("-inf"))
    return positions, mask
