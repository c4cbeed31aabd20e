"""
Exports a trained run to the engine's checkpoint layout (Hugging Face
`LlavaForConditionalGeneration` names), fp32 safetensors:
  OUT/config.json, model.safetensors, tokenizer.json, tokenizer_config.json
  (with the demo model's chat template), preprocessor_config.json
  OUT/twig/config.json, model.safetensors  (the released TwigVLM twig layout)

  /usr/bin/python3 training/export.py --run training/runs/demo --out models/demo --ttp-score-source all-text

--ttp-score-source names how TTP scores visual tokens when a request names no scorer (the twig config's
ttp_score_source): by the attention of the last prompt token (last-token, the released code's, the engine's default
when the key is absent) or of all text tokens (all-text, the paper's formula).
"""
import argparse
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import train  # noqa: E402
from model import Config, Llava  # noqa: E402


def write_safetensors(path, tensors):
    """The safetensors format: u64 header length, JSON header, raw little-endian bytes."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def decoder_tensors(prefix, layers):
    out = {}
    for i, l in enumerate(layers):
        p = f"{prefix}layers.{i}."
        out[p + "input_layernorm.weight"] = l.input_layernorm.weight
        out[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm.weight
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{n}.weight"] = getattr(l, n).weight
        for n in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{n}.weight"] = getattr(l, n).weight
    return out


def vision_tensors(prefix, v):
    out = {
        prefix + "embeddings.patch_embedding.weight": v.patch_embedding.weight,
        prefix + "embeddings.class_embedding": v.class_embedding,
        prefix + "embeddings.position_embedding.weight": v.position_embedding.weight,
    }
    for n in ("pre_layrnorm", "post_layernorm"):
        m = getattr(v, n)
        out[prefix + f"{n}.weight"], out[prefix + f"{n}.bias"] = m.weight, m.bias
    for i, l in enumerate(v.layers):
        p = f"{prefix}encoder.layers.{i}."
        for n, m in (("layer_norm1", l.layer_norm1), ("layer_norm2", l.layer_norm2), ("self_attn.q_proj", l.q_proj),
                     ("self_attn.k_proj", l.k_proj), ("self_attn.v_proj", l.v_proj),
                     ("self_attn.out_proj", l.out_proj), ("mlp.fc1", l.fc1), ("mlp.fc2", l.fc2)):
            out[p + n + ".weight"], out[p + n + ".bias"] = m.weight, m.bias
    return out


def tokenizer_json(vocab):
    added = [
        {"id": vocab.stoi[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in data.SPECIALS + ["<image>"]
    ]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab.stoi},
    }


def load_run(run):
    info = json.load(open(os.path.join(run, "config.json")))
    cfg = Config(**info["model"])
    model = Llava(cfg)
    model.vision.load_state_dict(torch.load(os.path.join(run, "vision.pt"))["vision"])
    model.load_state_dict(torch.load(train.base_checkpoint(run))["weights"], strict=False)
    model.vision.load_state_dict(torch.load(os.path.join(run, "vision.pt"))["vision"])
    model.grow_twig()
    twig_ck = os.path.join(run, "twig.pt")
    if os.path.exists(twig_ck):
        model.twig.load_state_dict(torch.load(twig_ck)["weights"])
    model.eval()
    return model, info


def base_tensors(model):
    """Checkpoint name -> parameter of the base model, in the HF LlavaForConditionalGeneration layout."""
    t = {"language_model.model.embed_tokens.weight": model.embed_tokens.weight,
         "language_model.model.norm.weight": model.norm.weight,
         "language_model.lm_head.weight": model.lm_head.weight}
    for i in (1, 2):
        lin = getattr(model.projector, f"linear_{i}")
        t[f"multi_modal_projector.linear_{i}.weight"], t[f"multi_modal_projector.linear_{i}.bias"] = lin.weight, lin.bias
    t.update(decoder_tensors("language_model.model.", model.layers))
    t.update(vision_tensors("vision_tower.vision_model.", model.vision))
    return t


def twig_tensors(twig):
    """Checkpoint name -> parameter of the twig, in the released TwigVLM twig layout."""
    t = decoder_tensors("model.", twig.layers)
    t["model.norm.weight"] = twig.norm.weight
    t["lm_head.weight"] = twig.lm_head.weight
    return t


def export(model, out, ttp_score_source=None):
    c = model.c
    vocab = data.Vocab()
    os.makedirs(os.path.join(out, "twig"), exist_ok=True)
    t = base_tensors(model)
    write_safetensors(os.path.join(out, "model.safetensors"), t)
    config = {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": c.image_token, "projector_hidden_act": "gelu",
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "text_config": {"model_type": "llama", "hidden_size": c.hidden, "intermediate_size": c.intermediate,
                        "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
                        "num_key_value_heads": c.kv_heads, "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta,
                        "vocab_size": c.vocab, "max_position_embeddings": c.max_positions,
                        "bos_token_id": c.bos, "eos_token_id": c.eos, "pad_token_id": c.pad},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": c.vision_width,
                          "intermediate_size": c.vision_mlp, "num_hidden_layers": c.vision_layers,
                          "num_attention_heads": c.vision_heads, "image_size": c.image_size,
                          "patch_size": c.patch_size, "num_channels": 3, "hidden_act": "quick_gelu",
                          "layer_norm_eps": c.ln_eps},
    }
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump(tokenizer_json(vocab), open(os.path.join(out, "tokenizer.json"), "w"))
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
               "chat_template": data.CHAT_TEMPLATE}, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"image_mean": data.MEAN.tolist(), "image_std": data.STD.tolist(),
               "size": {"shortest_edge": c.image_size}, "crop_size": c.image_size},
              open(os.path.join(out, "preprocessor_config.json"), "w"), indent=2)
    tw = twig_tensors(model.twig)
    write_safetensors(os.path.join(out, "twig", "model.safetensors"), tw)
    twig_config = {"twig_K": c.twig_k, "twig_T": c.twig_t, "final_wipe_layer": c.final_wipe_layer}
    if ttp_score_source:
        twig_config["ttp_score_source"] = ttp_score_source
    json.dump(twig_config, open(os.path.join(out, "twig", "config.json"), "w"), indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ttp-score-source", choices=["last-token", "all-text"],
                    help="the twig's default TTP scorer (absent: the engine's default, last-token)")
    args = ap.parse_args()
    model, _ = load_run(args.run)
    export(model, args.out, args.ttp_score_source)
    print(f"exported {args.run} to {args.out}")


if __name__ == "__main__":
    main()
