/**
 * The LLaVA model on ONNX Runtime, as pieces that decoding algorithms compose:
 * `encodeImage` (vision tower + projector), `embedPrompt` (token embeddings
 * with the single image placeholder expanded to the N visual features),
 * decoder segments over layer ranges with their own KV caches, and `logits`
 * (final norm + LM head). `generateBase` is plain decoding (the `base` mode).
 */

import { chooseToken, Rng, type SamplingOptions } from "../decoding/sampling.js";
import { invariant } from "../errors.js";
import { type DecoderGraphOptions, headBuilder } from "../onnx/decoder.js";
import type { ExecutionProvider } from "../options.js";
import { maxPictureTokens } from "../visual-tokens.js";
import type { LlavaWeights, NormWeights, Tensor, TextConfig } from "../weights.js";
import { DecoderSegment, graphOptions } from "./decoder-segment.js";
import { createGraphSession, type ExternalDataOptions } from "./graph-cache.js";
import type { LayerKv } from "./kv-cache.js";
import { ort } from "./session.js";
import { SessionIo, span } from "./tensor-io.js";
import { type EncodedVisual, VisualEncoder, type VisualInput } from "./visual-encoder.js";

/** What a released tensor holds (releaseWeights). */
const RELEASED = new Float32Array(0);

/**
 * How the model runs: provider and threads, the decoder's weight precision
 * (`precision`: fp32 default, fp16, int4; the vision tower stays fp32), the attention
 * path (`attention`: auto by default, which is direct for wide models and contrib for small
 * ones; plain for checking; see onnx/attention.ts) and where graphs above the
 * external-data threshold are cached.
 */
export interface RuntimeOptions extends DecoderGraphOptions, ExternalDataOptions {
  provider?: ExecutionProvider;
  threads?: number;
}

/** A session for final norm + LM head in the runtime's precision (cached as external data when large). */
export function createHeadSession(
  config: TextConfig,
  norm: NormWeights,
  lmHead: Tensor,
  options: RuntimeOptions = {},
): Promise<ort.InferenceSession> {
  const graph = graphOptions(options);
  return createGraphSession(
    {
      name: "lm_head",
      options: {
        config,
        precision: graph.precision,
        int4AccuracyLevel: graph.int4AccuracyLevel ?? null,
        ...(graph.int4BlockSize === undefined ? {} : { int4BlockSize: graph.int4BlockSize }),
      },
      weights: [norm.weight, lmHead],
      build: () => headBuilder(config, norm, lmHead, graph),
    },
    options,
  );
}

/** The prompt as the decoder sees it: hidden rows with their positions and where the image sits. */
export interface EmbeddedPrompt {
  /** [S, H] */
  hidden: Float32Array;
  positions: number[];
  /** Index in the expanded sequence of the first visual token. */
  visualStart: number;
  numVisual: number;
  /** Index of the placeholder in the token ids. */
  imagePosition: number;
}

export interface BaseGenerateOptions {
  inputIds: number[];
  /** One square view (LLaVA-1.5), unless `visual` is given. */
  pixelValues?: Float32Array;
  visual?: VisualInput;
  maxTokens: number;
  sampling: SamplingOptions;
  seed?: number;
  /** Called per generated token; return false to stop (stop sequence found). */
  onToken?: (id: number) => boolean | undefined;
  /** Checked between steps. */
  signal?: AbortSignal;
}

export interface BaseGenerateResult {
  outputIds: number[];
  finishReason: "stop" | "length" | "callback";
  promptTokens: number;
  prefillMs: number;
  decodeMs: number;
}

export class LlavaRuntime {
  private constructor(
    readonly weights: LlavaWeights,
    /** The vision tower and projector (and a video model's pooling): a request's visual tokens. */
    readonly visual: VisualEncoder,
    private readonly head: SessionIo,
    private readonly fullSegment: DecoderSegment | undefined,
    readonly options: RuntimeOptions,
  ) {}

  /**
   * Loads the vision tower, the LM head and, unless `fullSegment` is false, all base layers as
   * one segment (`full`, for plain decoding). An engine with a twig decodes every mode through
   * the twig decoder's own segments and skips it: one copy of the decoder weights, not two.
   */
  static async create(
    weights: LlavaWeights,
    options: RuntimeOptions = {},
    { fullSegment = true }: { fullSegment?: boolean } = {},
  ): Promise<LlavaRuntime> {
    const { text } = weights;
    const config = weights.config.text;
    const [vision, head, full] = await Promise.all([
      VisualEncoder.create(weights, options),
      createHeadSession(config, text.norm, text.lmHead, options),
      fullSegment
        ? DecoderSegment.create(config, text.layers, { ...options, name: "full", outputRows: true })
        : undefined,
    ]);
    return new LlavaRuntime(weights, vision, new SessionIo(head, "head"), full, options);
  }

  /** All base layers as one segment (plain decoding); absent when created with `fullSegment: false`. */
  get full(): DecoderSegment {
    if (!this.fullSegment) throw new Error("this runtime was created without the full decoder segment");
    return this.fullSegment;
  }

  get textConfig(): TextConfig {
    return this.weights.config.text;
  }

  /** N of a picture: for LLaVA-NeXT, where N varies with the picture's shape, the most any picture gives. */
  get numVisualTokens(): number {
    return maxPictureTokens(this.weights.config);
  }

  /**
   * Builds a decoder segment over base layers [a, b), optionally with one layer's attention
   * probabilities; `outputRows` for the segment that ends the model (see DecoderSegment.create).
   */
  segment(
    a: number,
    b: number,
    attentionProbsLayer?: number,
    name?: string,
    { outputRows = false }: { outputRows?: boolean } = {},
  ): Promise<DecoderSegment> {
    if (this.released)
      return Promise.reject(new Error("the runtime's weights were released (releaseWeights): it builds no segment"));
    return DecoderSegment.create(this.textConfig, this.weights.text.layers.slice(a, b), {
      ...this.options,
      attentionProbsLayer,
      name,
      outputRows,
    });
  }

  /** Set by releaseWeights. */
  released = false;

  /**
   * Frees the fp32 copies of the weights that every session has been built from: each tensor of
   * these weights and of `more` (the twig's) gets an empty array, but for the token embeddings and
   * the image-newline row, which the runtime reads itself. ONNX Runtime holds its own copies (in
   * the engine's precision), so a model's weights are then in memory once; the runtime builds no
   * more segments. Call it when every session the engine needs exists.
   */
  releaseWeights(...more: object[]): void {
    const keep = new Set<unknown>([this.weights.text.embedTokens, this.weights.imageNewline]);
    const visit = (x: unknown, seen: Set<unknown>) => {
      if (typeof x !== "object" || x === null || seen.has(x) || ArrayBuffer.isView(x)) return;
      seen.add(x);
      const t = x as Partial<Tensor>;
      if (Array.isArray(t.shape) && t.data instanceof Float32Array) {
        if (!keep.has(x)) t.data = RELEASED;
        return;
      }
      for (const v of Object.values(x)) visit(v, seen);
    };
    const seen = new Set<unknown>([this.weights.config]);
    for (const root of [this.weights, ...more]) visit(root, seen);
    this.released = true;
  }

  /** pixel values [1, 3, S, S] → image features [N, H]. */
  async encodeImage(pixelValues: Float32Array): Promise<Float32Array> {
    return (await this.visual.view(pixelValues)).features;
  }

  /** pixel values → image features [N, H] and the vision CLS token's attention to each of the N (VisionZip's score). */
  async encodeImageWithClsAttention(
    pixelValues: Float32Array,
  ): Promise<{ features: Float32Array; clsAttention: Float32Array }> {
    const { features, clsAttention } = await this.visual.view(pixelValues);
    return { features, clsAttention };
  }

  /** A request's visual tokens [N, H] (one view, AnyRes views or video frames) and their VisionZip scores. */
  encodeVisual(input: VisualInput): Promise<EncodedVisual> {
    return this.visual.encode(input);
  }

  /** The prompt token the visual tokens of `input` replace: `<video>` for a video, else `<image>`. */
  placeholderOf(input: VisualInput): number {
    const video = this.weights.config.video;
    if (input.kind !== "video") return this.weights.config.imageTokenIndex;
    if (!video) throw new RangeError("this model does not read videos");
    return video.tokenIndex;
  }

  /** Token embeddings [ids.length, H]. */
  embed(ids: readonly number[]): Float32Array {
    return span("embed", () => this.embedRows(ids));
  }

  private embedRows(ids: readonly number[]): Float32Array {
    const { hiddenSize, vocabSize } = this.textConfig;
    const table = this.weights.text.embedTokens.data;
    const out = new Float32Array(ids.length * hiddenSize);
    ids.forEach((id, i) => {
      if (!(id >= 0 && id < vocabSize)) throw new RangeError(`token id ${id} is outside the vocabulary (${vocabSize})`);
      out.set(table.subarray(id * hiddenSize, (id + 1) * hiddenSize), i * hiddenSize);
    });
    return out;
  }

  /**
   * The prompt with its single placeholder (`<image>`, or `placeholder`, e.g. `<video>`) replaced by the
   * visual features; positions 0..S-1.
   */
  embedPrompt(
    inputIds: readonly number[],
    imageFeatures: Float32Array,
    placeholder = this.weights.config.imageTokenIndex,
  ): EmbeddedPrompt {
    const H = this.textConfig.hiddenSize;
    const imagePosition = inputIds.indexOf(placeholder);
    invariant(
      imagePosition >= 0 && inputIds.indexOf(placeholder, imagePosition + 1) < 0,
      "the prompt must hold exactly one image placeholder",
    );
    const n = imageFeatures.length / H;
    const before = this.embed(inputIds.slice(0, imagePosition));
    const after = this.embed(inputIds.slice(imagePosition + 1));
    const hidden = new Float32Array(before.length + imageFeatures.length + after.length);
    hidden.set(before, 0);
    hidden.set(imageFeatures, before.length);
    hidden.set(after, before.length + imageFeatures.length);
    const total = hidden.length / H;
    return {
      hidden,
      positions: Array.from({ length: total }, (_, i) => i),
      visualStart: imagePosition,
      numVisual: n,
      imagePosition,
    };
  }

  /** Final norm + LM head on hidden rows [S, H] → logits [S, V]. */
  async logits(hidden: Float32Array): Promise<Float32Array> {
    const H = this.textConfig.hiddenSize;
    const out = await this.head.run({ hidden: new ort.Tensor("float32", hidden, [1, hidden.length / H, H]) });
    return out.logits.data as Float32Array;
  }

  /** The logit row of the last of S rows. */
  async lastLogits(hidden: Float32Array): Promise<Float32Array> {
    const H = this.textConfig.hiddenSize;
    return this.logits(hidden.subarray(hidden.length - H));
  }

  /** Plain decoding through all layers with KV caches: greedy or sampled. */
  async generateBase(o: BaseGenerateOptions): Promise<BaseGenerateResult> {
    const t0 = performance.now();
    const visual = visualInputOf(o);
    const prompt = this.embedPrompt(o.inputIds, (await this.encodeVisual(visual)).features, this.placeholderOf(visual));
    let position = prompt.positions.length;
    const limit = Math.min(o.maxTokens, this.textConfig.maxPositionEmbeddings - position);
    const caches: LayerKv[] = this.full.newCaches(position + limit); // the whole request: no step allocates KV
    const rng = new Rng(o.seed ?? 0);
    const prefill = await this.full.run(prompt.hidden, prompt.positions, caches, { outputRows: 1 });
    let logits = await this.lastLogits(prefill.hidden);
    const prefillMs = performance.now() - t0;
    const outputIds: number[] = [];
    let finishReason: BaseGenerateResult["finishReason"] = "length";
    while (outputIds.length < limit) {
      o.signal?.throwIfAborted();
      const id = chooseToken(logits, o.sampling, rng);
      if (id === this.textConfig.eosTokenId) {
        finishReason = "stop";
        break;
      }
      outputIds.push(id);
      if (o.onToken?.(id) === false) {
        finishReason = "callback";
        break;
      }
      if (outputIds.length >= limit) break;
      const step = await this.full.run(this.embed([id]), [position++], caches);
      logits = await this.lastLogits(step.hidden);
    }
    return {
      outputIds,
      finishReason,
      promptTokens: prompt.positions.length,
      prefillMs,
      decodeMs: performance.now() - t0 - prefillMs,
    };
  }

  async release(): Promise<void> {
    await Promise.all([this.visual.release(), this.head.release(), this.fullSegment?.release()]);
  }
}

/** A request's visual input: `visual`, else one square view from `pixelValues`. */
export function visualInputOf(o: { pixelValues?: Float32Array; visual?: VisualInput }): VisualInput {
  if (o.visual) return o.visual;
  if (!o.pixelValues) throw new RangeError("a request needs pixelValues or a visual input");
  return { kind: "image", pixelValues: o.pixelValues };
}
