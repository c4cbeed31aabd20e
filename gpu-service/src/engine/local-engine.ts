/**
 * An Engine that runs in the calling thread: checkpoint + twig + tokenizer +
 * image preprocessing + TwigVLM decoding, turned into the Engine's events.
 * The service never uses it on its main thread: worker-host.ts runs it in a
 * worker (session.run blocks the event loop).
 */
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { BatchLoop } from "./batch/batch-loop.js";
import { loadLlava, loadTwig } from "./checkpoint/llava-loader.js";
import type { Engine } from "./engine.js";
import { InvalidRequestError, invariant } from "./errors.js";
import type { EngineEvent, GenerateStats } from "./events.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits } from "./image.js";
import type { GenerateParams, RequestInput } from "./plan.js";
import { inspectMedia, planRequest } from "./plan-request.js";
import { LlavaRuntime, type RuntimeOptions } from "./runtime/llava-runtime.js";
import { span } from "./runtime/tensor-io.js";
import { TextStream } from "./text-stream.js";
import { TextCodec } from "./tokenizer.js";
import { TwigDecoder, type TwigGenerateResult } from "./twig/twig-decoder.js";
import { DEFAULT_VIDEO_LIMITS, type VideoLimits } from "./video/decode.js";
import { type PreparedVisual, prepareVisual } from "./visual-input.js";
import { frameTokens } from "./visual-tokens.js";
import type { LlavaWeights, TwigWeights } from "./weights.js";

export interface LocalEngineOptions extends RuntimeOptions {
  /** Twig directory; default `<model>/twig` when it exists. */
  twigDir?: string;
  imageLimits?: ImageLimits;
  /** Bytes, duration, frames and frame size of videos, and how long decoding may take. */
  videoLimits?: VideoLimits;
  name?: string;
  /** Decode up to this many requests together (batch/batch-loop.ts; every mode, `base` on a model without a twig); 1 or unset: one at a time. */
  maxBatch?: number;
  /** KV memory a batch may hold, in bytes. */
  kvBudgetBytes?: number;
  /** Prompt rows a batch prefills between two rounds (BatchOptions.prefillRowsPerRound; a longer prompt goes in chunks). */
  prefillRowsPerRound?: number;
  /** Batches draft at most this many tokens a sequence every round (0: none) instead of what has paid (benchmarks). */
  draftCap?: number;
  /**
   * Once loaded, free the fp32 weights the sessions were built from (LlavaRuntime.releaseWeights),
   * so that the model is in memory once, as ONNX Runtime holds it (the service does); `weights`
   * then throws. Unset: kept (benchmarks build segments of their own from them).
   */
  releaseWeights?: boolean;
}

/** Everything a request produced, for the CLI's trace. */
export interface RequestTrace {
  inputIds: number[];
  /** Where the placeholder (`<image>` or `<video>`) was in inputIds. */
  imagePosition: number;
  /** Every view's or frame's pixel values, one after the other ([views, 3, S, S]; one view for LLaVA-1.5). */
  pixelValues: Float32Array;
  /** The picture or video as prepared: its views or frames, their grids and size. */
  visual: PreparedVisual;
  result: TwigGenerateResult;
}

export class LocalEngine implements Engine {
  readonly info: Engine["info"];
  /** Set after each request (the CLI writes it out with --trace). */
  lastTrace?: RequestTrace;

  private constructor(
    readonly modelDir: string,
    readonly twigDir: string | undefined,
    private readonly runtime: LlavaRuntime,
    private readonly decoder: TwigDecoder | undefined,
    private readonly twig: TwigWeights | undefined,
    private readonly codec: TextCodec,
    private readonly limits: { image: ImageLimits; video: VideoLimits },
    name: string,
    /** Continuous batching, when on (every request goes through it). */
    readonly batch?: BatchLoop,
  ) {
    const cfg = runtime.textConfig;
    const perFrame = frameTokens(runtime.weights.config);
    this.info = {
      name,
      visualTokens: runtime.numVisualTokens,
      video: perFrame === undefined ? undefined : { tokensPerFrame: perFrame, maxFrames: limits.video.maxFrames },
      visualTokensVary: runtime.weights.config.anyres !== undefined || perFrame !== undefined,
      visual: {
        vision: runtime.weights.config.vision,
        visionFeatureSelectStrategy: runtime.weights.config.visionFeatureSelectStrategy,
        anyres: runtime.weights.config.anyres,
        video: runtime.weights.config.video,
      },
      numLayers: cfg.numLayers,
      contextLength: cfg.maxPositionEmbeddings,
      maxBatch: batch?.options.maxBatch ?? 1,
      twig: decoder?.info,
    };
  }

  static async load(modelDir: string, opts: LocalEngineOptions = {}): Promise<LocalEngine> {
    const weights = loadLlava(modelDir);
    const twigDir =
      opts.twigDir ?? (existsSync(join(modelDir, "twig", "config.json")) ? join(modelDir, "twig") : undefined);
    const twig = twigDir ? loadTwig(twigDir, weights) : undefined;
    const maxBatch = opts.maxBatch ?? 1;
    // with a twig every mode runs on the twig decoder's segments, and a batching engine decodes every
    // request in its batch loop's own: the runtime needs its full segment only to decode a model
    // without a twig one request at a time
    const runtime = await LlavaRuntime.create(weights, opts, { fullSegment: twig === undefined && maxBatch <= 1 });
    // a batching engine's decoder needs no segments of its own either
    const decoder = twig ? await TwigDecoder.create(runtime, twig, { segments: maxBatch <= 1 }) : undefined;
    const batch =
      maxBatch > 1
        ? await BatchLoop.create(decoder ?? runtime, {
            maxBatch,
            kvBudgetBytes: opts.kvBudgetBytes,
            prefillRowsPerRound: opts.prefillRowsPerRound,
            draftCap: opts.draftCap,
          })
        : undefined;
    if (opts.releaseWeights) runtime.releaseWeights(...(twig ? [twig] : []));
    return new LocalEngine(
      modelDir,
      twigDir,
      runtime,
      decoder,
      twig,
      TextCodec.load(modelDir),
      { image: opts.imageLimits ?? DEFAULT_IMAGE_LIMITS, video: opts.videoLimits ?? DEFAULT_VIDEO_LIMITS },
      opts.name ?? basename(modelDir),
      batch,
    );
  }

  /** The model's weights as loaded (benchmarks build an isolated segment from them). */
  get weights(): LlavaWeights {
    invariant(!this.runtime.released, "this engine was loaded with releaseWeights: its weights are gone");
    return this.runtime.weights;
  }

  /** N of a request's picture or video, read from its header (or ffprobe) without decoding it, as planning counts it. */
  countVisualTokens(media: Pick<GenerateParams, "image" | "video">): Promise<number> {
    return inspectMedia(media, this.info, this.limits);
  }

  /** The plan of a request for this model, within this engine's limits: what `generate` takes (plan-request.ts). */
  plan(input: RequestInput): Promise<GenerateParams> {
    return planRequest(input, this.info, this.limits);
  }

  get twigWeights(): TwigWeights | undefined {
    return this.twig;
  }

  async generate(params: GenerateParams, onEvent: (event: EngineEvent) => void, signal?: AbortSignal): Promise<void> {
    const rt = this.runtime;
    const { plan } = params;
    const visual = await prepareVisual(params, rt.weights.config, this.limits);
    const N = visual.numVisual;
    // the one way N can differ from what the plan counted from the header: a clip whose sampled frames do not all decode
    if (N !== plan.visualTokens && visual.input.kind === "video") {
      const decoded = visual.input.frames.length;
      const sampled = Math.round((plan.visualTokens * decoded) / N);
      throw new InvalidRequestError(`only ${decoded} of the video's ${sampled} sampled frames could be decoded`);
    }
    const text = params.prompt ?? this.codec.formatChat(params.messages ?? [], visual.placeholder);
    const inputIds = this.codec.encode(text);
    const placeholderId = rt.placeholderOf(visual.input);
    const imagePosition = inputIds.indexOf(placeholderId);
    invariant(
      imagePosition >= 0 && inputIds.lastIndexOf(placeholderId) === imagePosition,
      `the prompt must contain exactly one ${visual.placeholder} placeholder`,
    );
    const promptTokens = inputIds.length - 1 + N;
    if (promptTokens >= this.info.contextLength) {
      throw new InvalidRequestError(
        `the prompt is ${promptTokens} tokens (${N} visual tokens included); the context length is ${this.info.contextLength}`,
      );
    }
    invariant(plan.mode === "base" || this.decoder, `mode ${plan.mode} needs a twig and this model has none`);

    const stream = new TextStream((ids) => this.codec.decode(ids), params.stop);
    const sampling = { temperature: params.temperature, topP: params.topP };
    const t0 = performance.now();
    let firstTokenAt: number | undefined;
    // a verified batch goes into the text stream token by token, so that a stop sequence ending
    // inside it ends the output there (the tokens after it are not part of the answer)
    let taken = 0;
    const push = (ids: number[], drafted: boolean) => {
      let delta = "";
      let used = 0;
      while (used < ids.length && !stream.stopped) delta += stream.push([ids[used++]]);
      taken += used;
      if (used > 0 && (delta !== "" || !stream.stopped))
        onEvent({ type: "delta", text: delta, tokenIds: ids.slice(0, used), acceptedDraftTokens: drafted ? used : 0 });
    };
    // the accepted drafts and the full model's own token go out as two deltas, so that a client can
    // tell the twig's text from the model's
    const onTokens = (ids: number[], acceptedDraft: number) =>
      span("text-stream", () => {
        firstTokenAt ??= performance.now();
        push(ids.slice(0, acceptedDraft), true);
        push(ids.slice(acceptedDraft), false);
        return !stream.stopped;
      });
    let result: TwigGenerateResult;
    const decoder = this.batch ?? this.decoder;
    if (decoder) {
      result = await decoder.generate({
        inputIds,
        visual: visual.input,
        plan,
        maxTokens: params.maxTokens,
        sampling,
        seed: params.seed,
        onStarted: (s) =>
          onEvent({ type: "started", ...s, visualGrids: visual.grids, videoFrames: visual.frameIndices }),
        onTokens,
        signal,
      });
    } else {
      const all = Array.from({ length: N }, (_, i) => i);
      onEvent({
        type: "started",
        promptTokens,
        visualTokens: N,
        keptVisualIndices: all,
        visualGrids: visual.grids,
        videoFrames: visual.frameIndices,
      });
      const r = await rt.generateBase({
        inputIds,
        visual: visual.input,
        maxTokens: params.maxTokens,
        sampling,
        seed: params.seed,
        onToken: (id) => onTokens([id], 0),
        signal,
      });
      result = {
        ...r,
        visualTokens: N,
        keptVisualIndices: all,
        r: N,
        retainBudget: null,
        scoreSource: null,
        steps: [],
        layout: { lower: 0, twig: 0, mid: 0, top: 0 },
      };
    }
    result.outputIds = result.outputIds.slice(0, taken);
    const tail = stream.flush();
    if (tail) onEvent({ type: "delta", text: tail, tokenIds: [], acceptedDraftTokens: 0 });
    this.lastTrace = { inputIds, imagePosition, pixelValues: visual.pixelValues, visual, result };
    const finishReason = result.finishReason === "callback" ? "stop_sequence" : result.finishReason;
    onEvent({
      type: "finished",
      finishReason,
      usage: { promptTokens, completionTokens: result.outputIds.length },
      stats: statsOf(result, t0, firstTokenAt),
    });
  }

  close(): Promise<void> {
    return Promise.all([this.batch?.release(), this.decoder?.release(), this.runtime.release()]).then(() => undefined);
  }
}

function statsOf(r: TwigGenerateResult, t0: number, firstTokenAt: number | undefined): GenerateStats {
  const drafted = r.steps.reduce((a, s) => a + s.drafted.length, 0);
  const accepted = r.steps.reduce((a, s) => a + s.accepted, 0);
  const histogram: number[] = [];
  for (const s of r.steps) {
    while (histogram.length <= s.accepted) histogram.push(0);
    histogram[s.accepted]++;
  }
  return {
    visualTokens: r.visualTokens,
    visualTokensKept: r.keptVisualIndices.length,
    prefillMs: r.prefillMs,
    timeToFirstTokenMs: (firstTokenAt ?? performance.now()) - t0,
    decodeMs: r.decodeMs,
    tokensPerSecond: r.outputIds.length / ((r.prefillMs + r.decodeMs) / 1000 || 1),
    draftedTokens: drafted,
    acceptedTokens: accepted,
    acceptanceRate: drafted ? accepted / drafted : 0,
    verifications: r.steps.length,
    meanAcceptedLength: r.steps.length ? accepted / r.steps.length : 0,
    acceptedLengthHistogram: histogram,
  };
}
