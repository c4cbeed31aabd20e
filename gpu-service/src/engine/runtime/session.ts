/** ONNX Runtime session options shared by every segment. */
import ort from "onnxruntime-node";
import type { ExecutionProvider } from "../options.js";

export interface SessionOptions {
  provider?: ExecutionProvider;
  /** Intra-op threads; 0 lets ONNX Runtime choose. */
  threads?: number;
  /** When set, ONNX Runtime profiles every node and writes `<prefix>_<time>.json` on endProfiling (benchmarks). */
  profileFilePrefix?: string;
}

/** A session from model bytes, or from a model file (whose external data files sit beside it). */
export function createSession(model: Uint8Array | string, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [opts.provider ?? "cpu"],
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
    ...(opts.profileFilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profileFilePrefix } : {}),
    // A model is several sessions (segments) that run one after another on few cores:
    // spinning thread pools would steal the cores from the session that is running.
    extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
  };
  const session =
    typeof model === "string"
      ? ort.InferenceSession.create(model, options)
      : ort.InferenceSession.create(model, options);
  return session.catch((err: Error) => {
    if (opts.provider === "cuda" && /cuda|shared librar/i.test(err.message)) {
      throw new Error(
        `the CUDA execution provider is not available (${err.message}); install onnxruntime-node's CUDA binaries on a GPU host with ONNXRUNTIME_NODE_INSTALL=cuda12 npm install`,
      );
    }
    throw err;
  });
}

export { ort };
