/**
 * How an engine runs its model, named as the service's configuration, the command line and the
 * benchmarks name it: the execution provider, the decoder weights' precision and the attention
 * implementation. The graph builder (onnx/) and the runtime (runtime/) take these; whoever
 * configures an engine reads the choices here without reaching into either.
 */

/** ONNX Runtime's execution provider: cpu (the default, tested here) or cuda (GPU hosts). */
export type ExecutionProvider = "cpu" | "cuda";
export const EXECUTION_PROVIDERS: readonly ExecutionProvider[] = ["cpu", "cuda"];

/** How linear weights are stored: fp32, fp16 (computed in fp32 after a Cast), or int4 blocks (MatMulNBits). */
export type Precision = "fp32" | "fp16" | "int4";
export const PRECISIONS: readonly Precision[] = ["fp32", "fp16", "int4"];

/** The decoder's attention implementations (onnx/attention.ts says what each is). */
export type AttentionImpl = "contrib" | "plain" | "direct";
export const ATTENTION_IMPLS: readonly AttentionImpl[] = ["contrib", "plain", "direct"];

/** What a runtime may be configured with: an implementation, or `auto`. */
export type AttentionChoice = AttentionImpl | "auto";
export const ATTENTION_CHOICES: readonly AttentionChoice[] = ["auto", ...ATTENTION_IMPLS];

/**
 * Prompt rows a batch prefills between two decoding rounds (batch/batch-loop.ts,
 * BatchOptions.prefillRowsPerRound): about three pictures of the demo model (144 visual tokens and
 * a question); a longer prompt goes in chunks of this many rows over several rounds.
 */
export const PREFILL_ROWS_PER_ROUND = 480;
