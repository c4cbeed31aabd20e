"""
Where trained weights live and how they are read back, for every script of training/:
  a run's stage checkpoints (RUN/vision.pt, align.pt, base.pt, base-PHASE.pt, twig.pt, written by the stages
  of train.py; RUN/config.json names the model's shape and the preset's schedule), and
  an exported model (the engine's Hugging Face `LlavaForConditionalGeneration` names in fp32 safetensors, the
  twig in the released TwigVLM twig layout under twig/; export.py writes it).
The name tables (base_tensors, twig_tensors) are the one map between the PyTorch modules and the checkpoint
names: export.py writes through them and load_exported reads back through them.
"""
import json
import os
import struct

import numpy as np
import torch

from model import Config, model_for


def save(path, **state):
    """torch.save through a temporary file, so that a run killed mid-write keeps its last checkpoint."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def stage_state(ck):
    """A stage's saved state, or None before its first save."""
    return torch.load(ck) if os.path.exists(ck) else None


def base_checkpoint(run):
    """The checkpoint of a run's trained base model: its last base phase's."""
    with open(os.path.join(run, "config.json")) as f:
        then = json.load(f)["schedule"].get("then", [])
    return os.path.join(run, ("base-" + then[-1] if then else "base") + ".pt")


def load_run(run):
    """A training run's model (vision stage, last base phase, and its twig when twig.pt exists, else the
    twig's untrained copy of base layers K+1..K+T), in eval mode, and the run's config.json."""
    info = json.load(open(os.path.join(run, "config.json")))
    cfg = Config(**info["model"])
    model = model_for(cfg)
    model.vision.load_state_dict(torch.load(os.path.join(run, "vision.pt"))["vision"])
    model.load_state_dict(torch.load(base_checkpoint(run))["weights"], strict=False)
    model.vision.load_state_dict(torch.load(os.path.join(run, "vision.pt"))["vision"])
    model.grow_twig()
    twig_ck = os.path.join(run, "twig.pt")
    if os.path.exists(twig_ck):
        model.twig.load_state_dict(torch.load(twig_ck)["weights"])
    model.eval()
    return model, info


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


def read_safetensors(path):
    """Every F32 tensor of a safetensors file, by name."""
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


def decoder_tensors(prefix, layers):
    """Checkpoint name -> parameter of LLaMA decoder layers (HF names under `prefix`)."""
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
    """Checkpoint name -> parameter of the vision tower (HF CLIPVisionModel names under `prefix`)."""
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


def base_tensors(model):
    """Checkpoint name -> parameter of the base model, in the HF LlavaForConditionalGeneration layout (the
    variants' LlavaNext(Video)ForConditionalGeneration add the top-level image_newline)."""
    t = {"language_model.model.embed_tokens.weight": model.embed_tokens.weight,
         "language_model.model.norm.weight": model.norm.weight,
         "language_model.lm_head.weight": model.lm_head.weight}
    for i in (1, 2):
        lin = getattr(model.projector, f"linear_{i}")
        t[f"multi_modal_projector.linear_{i}.weight"], t[f"multi_modal_projector.linear_{i}.bias"] = lin.weight, lin.bias
    t.update(decoder_tensors("language_model.model.", model.layers))
    t.update(vision_tensors("vision_tower.vision_model.", model.vision))
    if hasattr(model, "image_newline"):
        t["image_newline"] = model.image_newline
    return t


def twig_tensors(twig):
    """Checkpoint name -> parameter of the twig, in the released TwigVLM twig layout."""
    t = decoder_tensors("model.", twig.layers)
    t["model.norm.weight"] = twig.norm.weight
    t["lm_head.weight"] = twig.lm_head.weight
    return t


# the exported config's architecture -> the variant (model.Config.variant)
VARIANTS = {"LlavaForConditionalGeneration": "llava", "LlavaNextForConditionalGeneration": "next",
            "LlavaNextVideoForConditionalGeneration": "video"}


def load_exported(model_dir):
    """An exported model directory (export.py's layout, or a variant's) as a model with its twig, in eval mode."""
    cfg_json = json.load(open(os.path.join(model_dir, "config.json")))
    tc, vc = cfg_json["text_config"], cfg_json["vision_config"]
    twig_cfg = json.load(open(os.path.join(model_dir, "twig", "config.json")))
    variant = VARIANTS[cfg_json["architectures"][0]]
    extra = {}
    if variant != "llava":
        extra["grid_pinpoints"] = tuple(tuple(g) for g in cfg_json["image_grid_pinpoints"])
    if variant == "video":
        assert cfg_json["spatial_pool_mode"] == "average", cfg_json["spatial_pool_mode"]
        extra.update(pool_stride=cfg_json["spatial_pool_stride"], video_token=cfg_json["video_token_index"])
    c = Config(image_size=vc["image_size"], patch_size=vc["patch_size"], vision_width=vc["hidden_size"],
               vision_layers=vc["num_hidden_layers"], vision_heads=vc["num_attention_heads"],
               vision_mlp=vc["intermediate_size"], hidden=tc["hidden_size"], intermediate=tc["intermediate_size"],
               layers=tc["num_hidden_layers"], heads=tc["num_attention_heads"], kv_heads=tc["num_key_value_heads"],
               vocab=tc["vocab_size"], max_positions=tc["max_position_embeddings"], rope_theta=tc["rope_theta"],
               rms_eps=tc["rms_norm_eps"], ln_eps=vc["layer_norm_eps"], twig_k=twig_cfg["twig_K"],
               twig_t=twig_cfg["twig_T"], final_wipe_layer=twig_cfg["final_wipe_layer"],
               image_token=cfg_json["image_token_index"], variant=variant, **extra)
    model = model_for(c)
    model.grow_twig()
    # the exporter's own name -> parameter maps, read backwards
    names, twig_names = base_tensors(model), twig_tensors(model.twig)
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
