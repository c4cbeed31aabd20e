/** ONNX Runtime session options shared by every segment. */
import ort from "onnxruntime-node";
import type { ExecutionProvider } from "../types.js";

export interface SessionOptions {
  provider?: ExecutionProvider;
  /** Intra-op threads; 0 lets ONNX Runtime choose. */
  threads?: number;
}

export function createSession(bytes: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, {
    executionProviders: [opts.provider ?? "cpu"],
    intraOpNumThreads: opts.threads ?? 0,
    interOpNumThreads: 1,
    graphOptimizationLevel: "all",
    // A model is several sessions (segments) that run one after another on few cores:
    // spinning thread pools would steal the cores from the session that is running.
    extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
  });
}

export { ort };
