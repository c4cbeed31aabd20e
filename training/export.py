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
--default-pruned-fraction (a number or a fraction such as 2/3) names the share of a request's own visual tokens
pruned when it names no budget (the twig config's default_pruned_fraction; absent: the paper's headline, 88.9%).
"""
import argparse
import fractions
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
from checkpoints import base_tensors, load_run, twig_tensors, write_safetensors  # noqa: E402
from variants import vocab_for, world_of  # noqa: E402


def tokenizer_json(vocab):
    """The word-level tokenizer.json (HF tokenizers' WordPiece over whole words, Whitespace pre-tokenizer)."""
    added = [
        {"id": vocab.stoi[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in vocab.specials
    ]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab.stoi},
    }


def variant_configs(c, config, preprocessor, vocab, out):
    """A variant's config.json (transformers' LlavaNextConfig or LlavaNextVideoConfig keys) and
    preprocessor_config.json (LlavaNextImageProcessor's), from the demo layout's; writes its
    processor_config.json and, for video, video_preprocessor_config.json."""
    pinpoints = [list(g) for g in c.grid_pinpoints]
    config = dict(config, image_grid_pinpoints=pinpoints, tie_word_embeddings=False, use_image_newline_parameter=True,
                  multimodal_projector_bias=True)
    preprocessor = dict(preprocessor, image_processor_type="LlavaNextImageProcessor", image_grid_pinpoints=pinpoints,
                        crop_size={"height": c.image_size, "width": c.image_size}, resample=3, do_resize=True,
                        do_center_crop=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_pad=True,
                        do_convert_rgb=True)
    processor = {"processor_class": "LlavaNextProcessor", "image_token": "<image>", "patch_size": c.patch_size,
                 "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}
    if c.variant == "next":
        config.update(architectures=["LlavaNextForConditionalGeneration"], model_type="llava_next")
    else:
        config.update(architectures=["LlavaNextVideoForConditionalGeneration"], model_type="llava_next_video",
                      video_token_index=c.video_token, spatial_pool_mode="average", spatial_pool_stride=c.pool_stride,
                      video_seq_length=(c.image_size // c.patch_size // c.pool_stride) ** 2)
        processor.update(processor_class="LlavaNextVideoProcessor", video_token="<video>")
        video = {k: v for k, v in preprocessor.items() if k not in ("image_grid_pinpoints", "do_pad")}
        video["video_processor_type"] = "LlavaNextVideoVideoProcessor"
        del video["image_processor_type"]
        json.dump(video, open(os.path.join(out, "video_preprocessor_config.json"), "w"), indent=2)
    json.dump(processor, open(os.path.join(out, "processor_config.json"), "w"), indent=2)
    return config, preprocessor


def export(model, out, ttp_score_source=None, default_pruned_fraction=None):
    """Writes a model with its twig to directory `out` (the layout in this module's doc)."""
    c = model.c
    vocab = vocab_for(world_of(None if c.variant == "llava" else c.variant))
    assert len(vocab) == c.vocab, f"the {c.variant} vocabulary has {len(vocab)} words, the model {c.vocab}"
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
    preprocessor = {"image_mean": data.MEAN.tolist(), "image_std": data.STD.tolist(),
                    "size": {"shortest_edge": c.image_size}, "crop_size": c.image_size}
    if c.variant != "llava":
        config, preprocessor = variant_configs(c, config, preprocessor, vocab, out)
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump(tokenizer_json(vocab), open(os.path.join(out, "tokenizer.json"), "w"))
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
               "chat_template": data.CHAT_TEMPLATE}, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    json.dump(preprocessor, open(os.path.join(out, "preprocessor_config.json"), "w"), indent=2)
    tw = twig_tensors(model.twig)
    write_safetensors(os.path.join(out, "twig", "model.safetensors"), tw)
    twig_config = {"twig_K": c.twig_k, "twig_T": c.twig_t, "final_wipe_layer": c.final_wipe_layer}
    if ttp_score_source:
        twig_config["ttp_score_source"] = ttp_score_source
    if default_pruned_fraction is not None:
        twig_config["default_pruned_fraction"] = default_pruned_fraction
    json.dump(twig_config, open(os.path.join(out, "twig", "config.json"), "w"), indent=2)


def pruned_fraction(text):
    """A share strictly between 0 and 1, written as a number or as a fraction such as 2/3."""
    f = float(fractions.Fraction(text))
    if not 0 < f < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ttp-score-source", choices=["last-token", "all-text"],
                    help="the twig's default TTP scorer (absent: the engine's default, last-token)")
    ap.add_argument("--default-pruned-fraction", type=pruned_fraction,
                    help="the share pruned when a request names no budget, e.g. 2/3 (absent: the engine's 8/9)")
    args = ap.parse_args()
    model, _ = load_run(args.run)
    export(model, args.out, args.ttp_score_source, args.default_pruned_fraction)
    print(f"exported {args.run} to {args.out}")


if __name__ == "__main__":
    main()
