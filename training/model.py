"""
The demo model in PyTorch, the same architecture and tensor names as LLaVA-1.5
in the Hugging Face layout, so that the TypeScript engine loads the export as it
would load a real checkpoint:
  CLIP-style ViT (patch conv without bias, class and position embeddings,
  pre-layernorm, pre-norm encoder layers with quick-GELU; features from the
  second-to-last layer's output, CLS dropped) -> mlp2x_gelu projector ->
  LLaMA decoder (RMSNorm, rotary with HF rotate_half at explicit positions,
  SwiGLU) -> final norm -> LM head.
The twig (TwigVLM) is T more decoder layers, its own norm and its own head, fed by
the hidden state that leaves base layer K.
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import anyres


@dataclass
class Config:
    # vision tower
    image_size: int = 96
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 5
    vision_heads: int = 4
    vision_mlp: int = 512
    # language model
    hidden: int = 128
    intermediate: int = 352
    layers: int = 32
    heads: int = 4
    kv_heads: int = 4
    vocab: int = 82
    max_positions: int = 512
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    ln_eps: float = 1e-5
    # twig
    twig_k: int = 2
    twig_t: int = 3
    final_wipe_layer: int = 24
    # token ids
    bos: int = 1
    eos: int = 2
    pad: int = 3
    image_token: int = 81
    # the variant: "llava" (one 96x96 view), "next" (LLaVA-NeXT's AnyRes over grid_pinpoints, (height, width)
    # each, with image_newline), "video" (LLaVA-NeXT-Video: frames through the tower, pool_stride x pool_stride
    # average pooling before the projector, the <video> placeholder video_token)
    variant: str = "llava"
    grid_pinpoints: tuple = ()
    pool_stride: int = 0
    video_token: int = -1

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2

    @property
    def placeholder(self):
        """The prompt token that the visual tokens replace."""
        return self.video_token if self.variant == "video" else self.image_token

    def to_dict(self):
        return asdict(self)


class VisionLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.vision_width
        self.layer_norm1 = nn.LayerNorm(w, eps=c.ln_eps)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(w, w) for _ in range(4))
        self.layer_norm2 = nn.LayerNorm(w, eps=c.ln_eps)
        self.fc1 = nn.Linear(w, c.vision_mlp)
        self.fc2 = nn.Linear(c.vision_mlp, w)
        self.heads = c.vision_heads

    def forward(self, x, want_probs=False):
        b, s, w = x.shape
        hd = w // self.heads
        h = self.layer_norm1(x)
        q = self.q_proj(h).view(b, s, self.heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(b, s, self.heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(b, s, self.heads, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        x = x + self.out_proj((a @ v).transpose(1, 2).reshape(b, s, w))
        h = self.fc1(self.layer_norm2(x))
        x = x + self.fc2(h * torch.sigmoid(1.702 * h))
        return (x, a) if want_probs else x


class VisionTower(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.vision_width
        self.patch_embedding = nn.Conv2d(3, w, c.patch_size, c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * 0.02)
        self.position_embedding = nn.Embedding(c.num_patches + 1, w)
        self.pre_layrnorm = nn.LayerNorm(w, eps=c.ln_eps)
        self.layers = nn.ModuleList(VisionLayer(c) for _ in range(c.vision_layers))
        self.post_layernorm = nn.LayerNorm(w, eps=c.ln_eps)

    def forward(self, pixels, cls_attention=False):
        """Patch features from the second-to-last layer's output, CLS dropped: [B, N, width]. With cls_attention,
        also the attention the CLS token pays each patch in that layer, averaged over heads [B, N] (what a
        VisionZip-style pruner keeps the most of)."""
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.position_embedding.weight
        x = self.pre_layrnorm(x)
        for layer in self.layers[:-2]:
            x = layer(x)
        x, a = self.layers[-2](x, want_probs=True)
        return (x[:, 1:], a.mean(1)[:, 0, 1:]) if cls_attention else x[:, 1:]


class Projector(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.linear_1 = nn.Linear(c.vision_width, c.hidden)
        self.linear_2 = nn.Linear(c.hidden, c.hidden)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(positions, head_dim, theta):
    """cos and sin of HF rotary angles for positions [S] or [B, S]: each [1 or B, 1, S, head_dim] (rotate_half
    layout)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = positions.float()[..., None] * inv
    ang = torch.cat([ang, ang], -1)
    ang = ang[None, None] if positions.dim() == 1 else ang[:, None]
    return torch.cos(ang), torch.sin(ang)


def rotary(x, tables):
    """HF rotate_half rotary: x * cos + rotate_half(x) * sin; x [B, H, S, D]."""
    cos, sin = tables
    d = x.shape[-1]
    return x * cos + torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1) * sin


class DecoderLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        d, hd = c.hidden, c.hidden // c.heads
        self.input_layernorm = RMSNorm(d, c.rms_eps)
        self.q_proj = nn.Linear(d, c.heads * hd, bias=False)
        self.k_proj = nn.Linear(d, c.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, c.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.heads * hd, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d, c.rms_eps)
        self.gate_proj = nn.Linear(d, c.intermediate, bias=False)
        self.up_proj = nn.Linear(d, c.intermediate, bias=False)
        self.down_proj = nn.Linear(c.intermediate, d, bias=False)
        self.c = c

    def forward(self, x, tables, mask, want_probs=False):
        c = self.c
        b, s, _ = x.shape
        hd = c.hidden // c.heads
        h = self.input_layernorm(x)
        q = rotary(self.q_proj(h).view(b, s, c.heads, hd).transpose(1, 2), tables)
        k = rotary(self.k_proj(h).view(b, s, c.kv_heads, hd).transpose(1, 2), tables)
        v = self.v_proj(h).view(b, s, c.kv_heads, hd).transpose(1, 2)
        if c.kv_heads != c.heads:
            k = k.repeat_interleave(c.heads // c.kv_heads, 1)
            v = v.repeat_interleave(c.heads // c.kv_heads, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
        p = torch.softmax(scores, -1)
        heads_out = p @ v
        x = x + self.o_proj(heads_out.transpose(1, 2).reshape(b, s, c.heads * hd))
        h = self.post_attention_layernorm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return (x, p, heads_out) if want_probs else x


def causal_mask(s, device=None):
    return torch.full((s, s), float("-inf"), device=device).triu(1)


class Twig(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.twig_t))
        self.norm = RMSNorm(c.hidden, c.rms_eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)


class Llava(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.vision = VisionTower(c)
        self.projector = Projector(c)
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.hidden, c.rms_eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        self.twig = None
        self.apply(self._init)
        for layer in self.layers:
            for lin in (layer.o_proj, layer.down_proj):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * c.layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def grow_twig(self):
        """The paper's initialisation: copy base layers K+1..K+T, the final norm and the LM head."""
        c = self.c
        twig = Twig(c)
        for i in range(c.twig_t):
            twig.layers[i].load_state_dict(self.layers[c.twig_k + i].state_dict())
        twig.norm.load_state_dict(self.norm.state_dict())
        twig.lm_head.load_state_dict(self.lm_head.state_dict())
        self.twig = twig

    def visual_features(self, pixels):
        """The visual tokens of each sample: [B, N, d] from pixels [B, 3, H, W] (a variant: a list of [N_b, d])."""
        return self.projector(self.vision(pixels))

    def embed(self, input_ids, pixels):
        """Token embeddings with each sequence's single placeholder token (<image>, or a variant's) replaced by its
        visual tokens; rows that end up shorter (a variant's fewer visual tokens) are padded with zeros."""
        feats = self.visual_features(pixels)  # [B, N, d] or B of [N_b, d]
        emb = self.embed_tokens(input_ids)
        rows = []
        for b in range(input_ids.shape[0]):
            at = int((input_ids[b] == self.c.placeholder).nonzero()[0, 0])
            rows.append(torch.cat([emb[b, :at], feats[b], emb[b, at + 1 :]], 0))
        width = max(r.shape[0] for r in rows)
        return torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) if r.shape[0] < width else r for r in rows])

    def layout(self, s, layout):
        """Rotary tables and attention mask: one causal sequence, or packed turns (data.packed_layout)."""
        positions, mask = layout[:2] if layout is not None else (torch.arange(s), causal_mask(s))
        return rotary_tables(positions, self.c.hidden // self.c.heads, self.c.rope_theta), mask

    def forward(self, input_ids, pixels, upto=None, layout=None, probs_layer=None):
        """Logits of the full path, or (with upto=K) the hidden state leaving base layer K. A layout may carry
        two more masks (pruning.drop_masks): one for base layers K+1..K_f and one for the layers after K_f, where
        TTP's pruning and FinalWipe take visual tokens away. With probs_layer, also that layer's attention
        probabilities [B, heads, S, S] and its heads' outputs before o_proj [B, heads, S, head_dim]:
        (logits, probs, heads_out)."""
        x = self.embed(input_ids, pixels)
        tables, mask = self.layout(x.shape[1], layout)
        mid, late = layout[2:] if layout is not None and len(layout) > 2 else (None, None)
        for i, layer in enumerate(self.layers[: upto if upto is not None else len(self.layers)]):
            if late is not None and i >= self.c.final_wipe_layer:
                layer_mask = late
            elif mid is not None and i >= self.c.twig_k:
                layer_mask = mid
            else:
                layer_mask = mask
            if i == probs_layer:
                x, probs, heads_out = layer(x, tables, layer_mask, want_probs=True)
            else:
                x = layer(x, tables, layer_mask)
        if upto is not None:
            return x
        logits = self.lm_head(self.norm(x))
        return (logits, probs, heads_out) if probs_layer is not None else logits

    def twig_forward(self, input_ids, pixels, layout=None):
        with torch.no_grad():
            x = self.forward(input_ids, pixels, upto=self.c.twig_k, layout=layout)
        tables, mask = self.layout(x.shape[1], layout)
        for layer in self.twig.layers:
            x = layer(x, tables, mask)
        return self.twig.lm_head(self.twig.norm(x))


class LlavaNext(Llava):
    """LLaVA-NeXT (HF LlavaNextForConditionalGeneration): every AnyRes view through the tower and the projector,
    then packed as transformers packs them (anyres.pack_image_features: base view first, the unpadded tile
    grid row by row, image_newline after each row). pixels: a list of (pixel_values [views, 3, H, W],
    image_size (height, width)), one per sample, as anyres.preprocess gives them."""

    def __init__(self, c: Config):
        super().__init__(c)
        self.image_newline = nn.Parameter(torch.randn(c.hidden) / math.sqrt(c.hidden))

    def visual_features(self, pixels):
        feats = self.projector(self.vision(torch.cat([p for p, _ in pixels])))
        out, at = [], 0
        for p, size in pixels:
            out.append(anyres.pack_image_features(feats[at : at + p.shape[0]], size, [list(g) for g in
                                                  self.c.grid_pinpoints], self.c.image_size, self.image_newline))
            at += p.shape[0]
        return out


def pool_frames(feats, stride):
    """LlavaNextVideoPooler, average mode: each frame's [P*P, width] patch features as a P x P grid, averaged
    over stride x stride blocks (nn.AvgPool2d(stride, stride)), row by row: [frames, (P/stride)^2, width]."""
    f, n, w = feats.shape
    side = int(round(math.sqrt(n)))
    grid = feats.view(f, side, side, w).permute(0, 3, 1, 2)
    return F.avg_pool2d(grid, stride, stride).flatten(2).transpose(1, 2).contiguous()


class LlavaVideo(Llava):
    """LLaVA-NeXT-Video (HF LlavaNextVideoForConditionalGeneration) on videos: every frame through the tower,
    its patch features pooled (pool_frames, before the projector, in the tower's width), projected, and the
    frames' tokens one after the other in frame order, in place of the <video> placeholder. pixels: a list of
    [frames, 3, H, W], one per sample. image_newline is the NeXT image path's (kept for the layout; this model is
    not trained on images)."""

    def __init__(self, c: Config):
        super().__init__(c)
        self.image_newline = nn.Parameter(torch.randn(c.hidden) / math.sqrt(c.hidden))

    def visual_features(self, pixels):
        feats = self.projector(pool_frames(self.vision(torch.cat(list(pixels))), self.c.pool_stride))
        out, at = [], 0
        for p in pixels:
            out.append(feats[at : at + p.shape[0]].flatten(0, 1))
            at += p.shape[0]
        return out


def model_for(c: Config):
    """The model class of a config's variant, built."""
    return {"llava": Llava, "next": LlavaNext, "video": LlavaVideo}[c.variant](c)


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
