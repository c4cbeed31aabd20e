"""
Computes what the TypeScript engine must reproduce on an exported checkpoint:
for a few test scenes and prompts, the prompt's token ids, the preprocessed
pixels (a checksum and the first values), the last prefill position's logits of
the full path and of the twig's draft path, and the greedy output (no KV cache:
the whole sequence again at every step).

  /usr/bin/python3 training/parity.py --model models/demo --out models/demo/parity.json
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import export  # noqa: E402
from model import Config, Llava  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [
    ("test/0000.png", "what colour is the circle ?"),
    ("test/0001.png", "how many objects are there ?"),
    ("test/0002.png", "describe the picture ."),
    ("test/0003.png", "where is the red square ?"),
]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        assert h["dtype"] == "F32", f"{name}: {h['dtype']}"
        a, b = h["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(body[a:b], dtype=np.float32).copy()).view(h["shape"])
    return out


def load_exported(model_dir):
    cfg_json = json.load(open(os.path.join(model_dir, "config.json")))
    tc, vc = cfg_json["text_config"], cfg_json["vision_config"]
    twig_cfg = json.load(open(os.path.join(model_dir, "twig", "config.json")))
    c = Config(image_size=vc["image_size"], patch_size=vc["patch_size"], vision_width=vc["hidden_size"],
               vision_layers=vc["num_hidden_layers"], vision_heads=vc["num_attention_heads"],
               vision_mlp=vc["intermediate_size"], hidden=tc["hidden_size"], intermediate=tc["intermediate_size"],
               layers=tc["num_hidden_layers"], heads=tc["num_attention_heads"], kv_heads=tc["num_key_value_heads"],
               vocab=tc["vocab_size"], max_positions=tc["max_position_embeddings"], rope_theta=tc["rope_theta"],
               rms_eps=tc["rms_norm_eps"], ln_eps=vc["layer_norm_eps"], twig_k=twig_cfg["twig_K"],
               twig_t=twig_cfg["twig_T"], final_wipe_layer=twig_cfg["final_wipe_layer"],
               image_token=cfg_json["image_token_index"])
    model = Llava(c)
    model.grow_twig()
    # the exporter's own name -> parameter maps, read backwards
    names, twig_names = export.base_tensors(model), export.twig_tensors(model.twig)
    with torch.no_grad():
        for file, table in ((os.path.join(model_dir, "model.safetensors"), names),
                            (os.path.join(model_dir, "twig", "model.safetensors"), twig_names)):
            tensors = read_safetensors(file)
            missing = set(table) - set(tensors)
            assert not missing, f"{file}: missing {sorted(missing)[:3]}"
            for n, p in table.items():
                p.copy_(tensors[n])
    model.eval()
    return model


def greedy(forward, ids, px, eos, max_tokens):
    """Greedy continuation of prompt ids (with </s> when it comes within max_tokens); no KV cache: each step
    runs the whole sequence again."""
    out = []
    for _ in range(max_tokens):
        nxt = int(forward(torch.tensor([ids + out]), px)[0, -1].argmax())
        out.append(nxt)
        if nxt == eos:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_exported(args.model)
    vocab = data.Vocab()
    cases = []
    with torch.no_grad():
        for image, question in CASES:
            px = data.pixels(Image.open(os.path.join(args.data, image)).convert("RGB"))[None]
            ids = data.prompt_ids(vocab, question)
            full = model(torch.tensor([ids]), px)[0, -1]
            twig = model.twig_forward(torch.tensor([ids]), px)[0, -1]
            out = greedy(model.forward, ids, px, vocab.eos, args.max_tokens)
            flat = px.flatten()
            cases.append({
                "image": image, "question": question, "inputIds": ids,
                "pixelSum": float(flat.double().sum()), "pixelFirst": flat[:16].tolist(),
                "logits": full.tolist(), "twigLogits": twig.tolist(), "greedyIds": out,
                "greedyText": vocab.decode(out),
            })
    json.dump({"model": os.path.basename(os.path.abspath(args.model)), "maxTokens": args.max_tokens, "cases": cases},
              open(args.out, "w"), indent=1)
    print(f"wrote {len(cases)} parity cases to {args.out}")


if __name__ == "__main__":
    main()
