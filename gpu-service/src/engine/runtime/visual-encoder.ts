/**
 * The visual tokens of a request, whatever the model: one padded square view (LLaVA-1.5), a picture's
 * AnyRes views (LLaVA-NeXT: base view and tiles, each through the tower and the projector, packed with
 * `image_newline`), or a video's frames (LLaVA-NeXT-Video: each through the tower, pooled, projected, one
 * frame after the other). Each view or frame runs through the same tower session on its own; N is the
 * request's.
 *
 * Besides the features it gives each visual token VisionZip's score: the attention the CLS token of the
 * token's own view or frame pays it in the tower's feature layer (pooled with the token for a video;
 * 0 for an image_newline token, which no view produced).
 */
import { type AnyresLayout, packRows, packScores } from "../anyres/layout.js";
import { videoPoolGraph, visionGraph } from "../onnx/vision.js";
import type { LlavaWeights } from "../weights.js";
import { createSession, ort, type SessionOptions } from "./session.js";
import { SessionIo } from "./tensor-io.js";

export type VisualInput =
  /** One square view [3, S, S] (LLaVA-1.5's padded picture). */
  | { kind: "image"; pixelValues: Float32Array }
  /** A picture's AnyRes views [3, S, S] each (base view first, then the tiles) and their layout. */
  | { kind: "anyres"; views: Float32Array[]; layout: AnyresLayout }
  /** A video's frames [3, S, S] each, in order. */
  | { kind: "video"; frames: Float32Array[] };

export interface EncodedVisual {
  /** [N, textHidden] */
  features: Float32Array;
  /** [N]: VisionZip's score of each visual token. */
  clsAttention: ArrayLike<number>;
}

interface ViewOutput {
  features: Float32Array;
  clsAttention: Float32Array;
  visionFeatures?: Float32Array;
}

export class VisualEncoder {
  private constructor(
    private readonly weights: LlavaWeights,
    private readonly tower: SessionIo,
    private readonly pool: SessionIo | undefined,
  ) {}

  /** The tower (with the pre-projector output a video model pools) and, for a video model, the pooling graph. */
  static async create(weights: LlavaWeights, options: SessionOptions): Promise<VisualEncoder> {
    const video = weights.config.video !== undefined;
    const [tower, pool] = await Promise.all([
      createSession(visionGraph(weights, { clsAttention: true, visionFeatures: video }), options),
      video ? createSession(videoPoolGraph(weights), options) : Promise.resolve(undefined),
    ]);
    return new VisualEncoder(weights, new SessionIo(tower, "vision"), pool && new SessionIo(pool, "video-pool"));
  }

  /** One view [3, S, S] through the tower and the projector. */
  async view(pixelValues: Float32Array): Promise<ViewOutput> {
    const s = this.weights.config.vision.imageSize;
    const out = await this.tower.run({ pixel_values: new ort.Tensor("float32", pixelValues, [1, 3, s, s]) });
    return {
      features: out.image_features.data as Float32Array,
      clsAttention: out.cls_attention.data as Float32Array,
      visionFeatures: out.vision_features?.data as Float32Array | undefined,
    };
  }

  /** The request's visual tokens and their VisionZip scores. */
  async encode(input: VisualInput): Promise<EncodedVisual> {
    switch (input.kind) {
      case "image": {
        const v = await this.view(input.pixelValues);
        return { features: v.features, clsAttention: v.clsAttention };
      }
      case "anyres": {
        const newline = this.weights.imageNewline?.data;
        if (!newline) throw new Error("this model has no image_newline: it does not read pictures with AnyRes");
        const views: ViewOutput[] = [];
        for (const v of input.views) views.push(await this.view(v));
        const H = this.weights.config.text.hiddenSize;
        return {
          features: packRows(
            input.layout,
            views.map((v) => v.features),
            H,
            newline,
          ),
          clsAttention: packScores(
            input.layout,
            views.map((v) => v.clsAttention),
          ),
        };
      }
      case "video":
        return this.encodeFrames(input.frames);
    }
  }

  private async encodeFrames(frames: Float32Array[]): Promise<EncodedVisual> {
    if (!this.pool) throw new Error("this model does not read videos");
    if (frames.length === 0) throw new RangeError("a video needs at least one frame");
    const per: ViewOutput[] = [];
    for (const f of frames) per.push(await this.view(f));
    const n = (per[0].visionFeatures as Float32Array).length;
    const m = per[0].clsAttention.length;
    const feats = new Float32Array(frames.length * n);
    const cls = new Float32Array(frames.length * m);
    per.forEach((p, i) => {
      feats.set(p.visionFeatures as Float32Array, i * n);
      cls.set(p.clsAttention, i * m);
    });
    const W = this.weights.config.vision.hiddenSize;
    const out = await this.pool.run({
      vision_features: new ort.Tensor("float32", feats, [frames.length, n / W, W]),
      patch_cls_attention: new ort.Tensor("float32", cls, [frames.length, m]),
    });
    return { features: out.video_features.data as Float32Array, clsAttention: out.cls_attention.data as Float32Array };
  }

  async release(): Promise<void> {
    await Promise.all([this.tower.release(), this.pool?.release()]);
  }
}
