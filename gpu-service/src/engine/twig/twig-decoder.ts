/**
 * TwigVLM decoding over a LlavaRuntime and a twig: every mode of the engine.
 *
 * The base model is cut into segments that hold different tokens (TTP's three
 * KV layouts): lower = base layers [0, K) and the twig see every visual token;
 * mid = [K, K_f) sees the R kept ones; top = [K_f, L) sees none. Kept tokens keep
 * their original positions; later tokens continue from the unpruned length.
 *
 * Prefill: lower → twig (attention of its last layer scores the visual tokens:
 * TTP) → mid on text + kept visual → top on text only → first token.
 * Decoding, speculative (SSD): the draft path (lower → twig → twig head) proposes
 * up to delta tokens, stopping at EOS or when a token's draft probability is
 * below theta; the full path verifies them in one pass over mid and top (their
 * lower states were computed while drafting); the longest agreeing prefix plus
 * the full model's own next token are emitted and every cache rolls back.
 * Decoding, plain: one token through lower → mid → top per step.
 */

import { keptTokensForBudget, minRetainBudget } from "../decoding/budget.js";
import { argmax, chooseToken, distribution, Rng, type SamplingOptions, sample } from "../decoding/sampling.js";
import { verifyGreedy, verifySampled } from "../decoding/speculative.js";
import { type ScoreSource, topR, visualScores } from "../decoding/ttp.js";
import { headGraph } from "../onnx/decoder.js";
import { DecoderSegment } from "../runtime/decoder-segment.js";
import type { LlavaRuntime } from "../runtime/llava-runtime.js";
import { createSession, ort } from "../runtime/session.js";
import type { Mode, TwigWeights } from "../types.js";

export interface TwigGenerateOptions {
  inputIds: number[];
  pixelValues: Float32Array;
  mode: Mode;
  maxTokens: number;
  sampling: SamplingOptions;
  seed?: number;
  retainBudget?: number;
  draftLength?: number;
  draftThreshold?: number;
  scoreSource?: ScoreSource;
  /** Called with each verified batch of tokens (and how many came from accepted drafts); false stops. */
  onTokens?: (ids: number[], acceptedDraft: number) => boolean | undefined;
  onStarted?: (info: { promptTokens: number; visualTokens: number; keptVisualIndices: number[] }) => void;
  signal?: AbortSignal;
}

export interface TwigStep {
  drafted: number[];
  accepted: number;
}

export interface TwigGenerateResult {
  outputIds: number[];
  finishReason: "stop" | "length" | "callback";
  promptTokens: number;
  visualTokens: number;
  keptVisualIndices: number[];
  /** R: visual tokens kept in the middle layers. */
  r: number;
  prefillMs: number;
  decodeMs: number;
  steps: TwigStep[];
  /** Tokens each KV layout held right after prefill: lower and twig all, mid text + R, top text only. */
  layout: { lower: number; twig: number; mid: number; top: number };
}

const PRUNING: Record<Mode, "twig" | "fastv" | "random" | "none"> = {
  twig: "twig",
  "ttp-only": "twig",
  fastv: "fastv",
  random: "random",
  base: "none",
  "ssd-only": "none",
  visionzip: "none",
};
const SPECULATIVE: Record<Mode, boolean> = {
  twig: true,
  "ssd-only": true,
  base: false,
  "ttp-only": false,
  fastv: false,
  random: false,
  visionzip: false,
};

export class TwigDecoder {
  private constructor(
    readonly runtime: LlavaRuntime,
    readonly twig: TwigWeights,
    private readonly lower: DecoderSegment,
    private readonly twigLayers: DecoderSegment,
    private readonly mid: DecoderSegment,
    private readonly top: DecoderSegment | undefined,
    private readonly twigHead: ort.InferenceSession,
  ) {}

  static async create(runtime: LlavaRuntime, twig: TwigWeights): Promise<TwigDecoder> {
    const L = runtime.textConfig.numLayers;
    const { k, finalWipeLayer: kf } = twig;
    if (!(k >= 1 && kf > k && kf <= L)) throw new RangeError(`twig split K=${k}, K_f=${kf} does not fit ${L} layers`);
    const config = runtime.textConfig;
    const [lower, mid, top, twigHead] = await Promise.all([
      runtime.segment(0, k, k - 1),
      runtime.segment(k, kf),
      kf < L ? runtime.segment(kf, L) : Promise.resolve(undefined),
      createSession(headGraph(config, twig.norm, twig.lmHead), runtime.options),
    ]);
    const twigLayers = await DecoderSegment.create(config, twig.layers, {
      ...runtime.options,
      attentionProbsLayer: twig.layers.length - 1,
    });
    return new TwigDecoder(runtime, twig, lower, twigLayers, mid, top, twigHead);
  }

  /** The paper's headline budget (88.9% pruned: R-bar = N/9), raised to the smallest this shape allows. */
  get defaultRetainBudget(): number {
    const shape = {
      visualTokens: this.runtime.numVisualTokens,
      numLayers: this.runtime.textConfig.numLayers,
      k: this.twig.k,
      finalWipeLayer: this.twig.finalWipeLayer,
    };
    return Math.max(Math.round(shape.visualTokens / 9), Math.ceil(minRetainBudget(shape)));
  }

  private async twigLogits(hidden: Float32Array): Promise<Float32Array> {
    const H = this.runtime.textConfig.hiddenSize;
    const last = hidden.subarray(hidden.length - H);
    const out = await this.twigHead.run({ hidden: new ort.Tensor("float32", last, [1, 1, H]) });
    return out.logits.data as Float32Array;
  }

  async generate(o: TwigGenerateOptions): Promise<TwigGenerateResult> {
    const rt = this.runtime;
    const cfg = rt.textConfig;
    const H = cfg.hiddenSize;
    const eos = cfg.eosTokenId;
    const t0 = performance.now();
    const prompt = rt.embedPrompt(o.inputIds, await rt.encodeImage(o.pixelValues));
    const N = prompt.numVisual;
    const S = prompt.positions.length;
    const rows = (h: Float32Array, idx: readonly number[]) => {
      const out = new Float32Array(idx.length * H);
      idx.forEach((r, j) => {
        out.set(h.subarray(r * H, (r + 1) * H), j * H);
      });
      return out;
    };

    const lowerCaches = this.lower.newCaches();
    const twigCaches = this.twigLayers.newCaches();
    const midCaches = this.mid.newCaches();
    const topCaches = this.top?.newCaches() ?? [];

    // prefill: lower layers and the twig see every token
    const low = await this.lower.run(prompt.hidden, prompt.positions, lowerCaches);
    const tw = await this.twigLayers.run(low.hidden, prompt.positions, twigCaches);

    // choose the visual tokens the middle layers keep
    const pruning = PRUNING[o.mode];
    let kept = Array.from({ length: N }, (_, i) => i);
    let r = N;
    if (pruning !== "none") {
      const budget = o.retainBudget ?? this.defaultRetainBudget;
      r = keptTokensForBudget(budget, {
        visualTokens: N,
        numLayers: cfg.numLayers,
        k: this.twig.k,
        finalWipeLayer: this.twig.finalWipeLayer,
      });
      const shape = { heads: cfg.numHeads, queries: S, keys: S };
      if (pruning === "random") {
        const rng = new Rng((o.seed ?? 0) ^ 0x5eed);
        kept = topR(
          Array.from({ length: N }, () => rng.next()),
          r,
        );
      } else {
        const probs = pruning === "twig" ? tw.attentionProbs : low.attentionProbs;
        if (!probs) throw new Error("attention probabilities were not produced");
        kept = topR(
          visualScores(probs, shape, prompt.positions, prompt.visualStart, N, o.scoreSource ?? "last-token"),
          r,
        );
      }
    }
    // mid sees the text and the kept visual tokens, top the text only (FinalWipe); both keep original positions
    const isVisual = (p: number) => p >= prompt.visualStart && p < prompt.visualStart + N;
    const keptPositions = new Set(kept.map((v) => v + prompt.visualStart));
    const midIdx = prompt.positions.filter((p) => !isVisual(p) || keptPositions.has(p));
    const topIdx = pruning === "none" ? midIdx : midIdx.filter((p) => !isVisual(p));
    o.onStarted?.({ promptTokens: S, visualTokens: N, keptVisualIndices: kept });

    const midOut = await this.mid.run(rows(low.hidden, midIdx), midIdx, midCaches);
    // the top segment continues from mid's output rows for its tokens
    const midPos = new Map(midIdx.map((p, j) => [p, j]));
    let lastHidden = midOut.hidden;
    if (this.top) {
      const topOut = await this.top.run(
        rows(
          midOut.hidden,
          topIdx.map((p) => midPos.get(p) as number),
        ),
        topIdx,
        topCaches,
      );
      lastHidden = topOut.hidden;
    }
    const layout = {
      lower: lowerCaches[0].length,
      twig: twigCaches[0].length,
      mid: midCaches[0].length,
      top: topCaches[0]?.length ?? 0,
    };
    const rng = new Rng(o.seed ?? 0);
    let next = chooseToken(await rt.lastLogits(lastHidden), o.sampling, rng);
    const prefillMs = performance.now() - t0;

    const outputIds: number[] = [];
    const steps: TwigStep[] = [];
    let position = S;
    const limit = Math.min(o.maxTokens, cfg.maxPositionEmbeddings - S);
    let finishReason: TwigGenerateResult["finishReason"] = "length";
    const delta = o.draftLength ?? 5;
    const theta = o.draftThreshold ?? 0.6;
    const speculative = SPECULATIVE[o.mode];

    /** Full path (mid → top → head) over tokens whose lower states are `hK`. */
    const fullPath = async (hK: Float32Array, positions: number[]) => {
      const m = await this.mid.run(hK, positions, midCaches);
      const h = this.top ? (await this.top.run(m.hidden, positions, topCaches)).hidden : m.hidden;
      return rt.logits(h);
    };

    // emit: returns true when generation must stop
    const emit = (ids: number[], acceptedDraft: number): boolean => {
      const out: number[] = [];
      for (const id of ids) {
        if (id === eos) {
          finishReason = "stop";
          break;
        }
        out.push(id);
        if (outputIds.length + out.length >= limit) break;
      }
      outputIds.push(...out);
      if (out.length > 0 && o.onTokens?.(out, Math.min(acceptedDraft, out.length)) === false) {
        finishReason = "callback";
        return true;
      }
      return finishReason === "stop" || outputIds.length >= limit;
    };

    while (limit > 0) {
      o.signal?.throwIfAborted();
      // `next` is the full model's token: emit it, then extend the caches with it
      if (emit([next], 0)) break;
      if (!speculative) {
        const hK = (await this.lower.run(rt.embed([next]), [position], lowerCaches)).hidden;
        const logits = await fullPath(hK, [position]);
        position++;
        next = chooseToken(logits, o.sampling, rng);
        continue;
      }
      // draft: up to delta tokens through lower -> twig -> twig head
      const base = position;
      const inputs = [next];
      const hKs: Float32Array[] = [];
      const drafted: number[] = [];
      const q: Float64Array[] = [];
      for (let j = 0; j < delta; j++) {
        const hK = (await this.lower.run(rt.embed([inputs[j]]), [base + j], lowerCaches)).hidden;
        hKs.push(hK);
        const twigOut = await this.twigLayers.run(hK, [base + j], twigCaches);
        const logits = await this.twigLogits(twigOut.hidden);
        const dist = distribution(logits, o.sampling);
        const d = o.sampling.temperature > 0 ? sample(dist, rng) : argmax(logits);
        drafted.push(d);
        q.push(dist);
        inputs.push(d);
        // stop at EOS, or after a token the twig itself doubts (p < theta)
        const pd = o.sampling.temperature > 0 ? dist[d] : distribution(logits, { temperature: 1, topP: 1 })[d];
        if (d === eos || pd < theta) break;
      }
      const n = drafted.length;
      // lower layers for the last draft, then ONE verification pass over [next, d_1..d_n]
      hKs.push((await this.lower.run(rt.embed([drafted[n - 1]]), [base + n], lowerCaches)).hidden);
      const hK = new Float32Array((n + 1) * H);
      hKs.forEach((h, j) => {
        hK.set(h, j * H);
      });
      const positions = Array.from({ length: n + 1 }, (_, j) => base + j);
      const logits = await fullPath(hK, positions);
      const V = cfg.vocabSize;
      const logitRows = positions.map((_, j) => logits.subarray(j * V, (j + 1) * V));
      const v =
        o.sampling.temperature > 0
          ? verifySampled(drafted, q, logitRows, o.sampling, rng)
          : verifyGreedy(drafted, logitRows);
      steps.push({ drafted, accepted: v.accepted });
      // roll every cache back to [..., next, d_1..d_accepted]; lower/mid/top ran n+1 tokens, the twig n
      for (const c of [...lowerCaches, ...midCaches, ...topCaches]) c.truncate(c.length - n + v.accepted);
      for (const c of twigCaches) c.truncate(c.length - n + 1 + v.accepted);
      if (v.accepted === n) await this.twigLayers.run(hKs[n], [base + n], twigCaches); // the twig never saw d_n
      position = base + 1 + v.accepted;
      next = v.bonus;
      if (v.accepted > 0 && emit(drafted.slice(0, v.accepted), v.accepted)) break;
    }
    return {
      outputIds,
      finishReason,
      promptTokens: S,
      visualTokens: N,
      keptVisualIndices: kept,
      r,
      prefillMs,
      decodeMs: performance.now() - t0 - prefillMs,
      steps,
      layout,
    };
  }

  /**
   * Median times (ms) of the pieces of decoding after a prefill of the given prompt:
   * a full step (1 token through every layer), a draft step (lower + twig + twig head),
   * and verification of n drafts (mid + top + head over n+1 tokens). For benchmarks.
   */
  async stepCosts(inputIds: number[], pixelValues: Float32Array, reps: number): Promise<Record<string, number>> {
    const rt = this.runtime;
    const prompt = rt.embedPrompt(inputIds, await rt.encodeImage(pixelValues));
    const lower = this.lower.newCaches();
    const twig = this.twigLayers.newCaches();
    const mid = this.mid.newCaches();
    const top = this.top?.newCaches() ?? [];
    const low = await this.lower.run(prompt.hidden, prompt.positions, lower);
    await this.twigLayers.run(low.hidden, prompt.positions, twig);
    const m = await this.mid.run(low.hidden, prompt.positions, mid);
    if (this.top) await this.top.run(m.hidden, prompt.positions, top);
    const S = prompt.positions.length;
    const time = async (f: () => Promise<unknown>) => {
      const xs: number[] = [];
      for (let r = 0; r < reps + 1; r++) {
        const t0 = performance.now();
        await f();
        xs.push(performance.now() - t0);
        for (const c of [...lower, ...twig, ...mid, ...top]) c.truncate(S);
      }
      xs.shift();
      return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    };
    const H = rt.textConfig.hiddenSize;
    const tokens = (n: number) => rt.embed(Array.from({ length: n }, (_, i) => 10 + i));
    const positions = (n: number) => Array.from({ length: n }, (_, i) => S + i);
    const upper = async (h: Float32Array, n: number) => {
      const mm = await this.mid.run(h, positions(n), mid);
      const hh = this.top ? (await this.top.run(mm.hidden, positions(n), top)).hidden : mm.hidden;
      return rt.logits(hh);
    };
    const out: Record<string, number> = {};
    out["full step (1 token)"] = await time(async () =>
      upper((await this.lower.run(tokens(1), positions(1), lower)).hidden, 1),
    );
    out["draft step (lower+twig)"] = await time(async () => {
      const h = (await this.lower.run(tokens(1), positions(1), lower)).hidden;
      return this.twigLogits((await this.twigLayers.run(h, positions(1), twig)).hidden);
    });
    for (const n of [1, 3, 5]) {
      const h = new Float32Array((n + 1) * H);
      out[`verify ${n} drafts (upper)`] = await time(() => upper(h, n + 1));
    }
    return out;
  }

  async release(): Promise<void> {
    await Promise.all([
      this.lower.release(),
      this.twigLayers.release(),
      this.mid.release(),
      this.top?.release(),
      this.twigHead.release(),
    ]);
  }
}
