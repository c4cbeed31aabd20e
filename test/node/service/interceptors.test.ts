/**
 * The interceptors around Generate (server/generate-calls.ts, call-metrics.ts, request-log.ts) on an
 * in-memory router: a call is counted in flight from its parsed request until its stream ends, fails or
 * is cancelled by its caller; each ends once, with one log line; a request that cannot be parsed is no call.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import {
  type GenerateEvent,
  GenerateEventSchema,
  type GenerateRequest,
  InferenceService,
} from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { describe, expect, it } from "vitest";
import { InFlight } from "../../../gpu-service/src/server/call-metrics.js";
import type { Logger } from "../../../gpu-service/src/server/log.js";
import { requestLog } from "../../../gpu-service/src/server/request-log.js";

const delta = (text: string) => create(GenerateEventSchema, { event: { case: "delta", value: { text } } });

/** A router whose Generate answers by the request's prompt: "ok" two deltas, "fail" one then an error, "wait" until cancelled. */
function service() {
  const inFlight = new InFlight();
  const lines: Record<string, unknown>[] = [];
  const counts: number[] = [];
  const seenIds: string[] = [];
  const logger = Object.fromEntries(
    ["info", "warn", "error"].map((level) => [
      level,
      (line: Record<string, unknown>) => lines.push({ level, ...line }),
    ]),
  ) as unknown as Logger;
  const transport = createRouterTransport(
    (router) =>
      router.service(InferenceService, {
        listModels: () => ({ models: [] }),
        async *generate(req: GenerateRequest, ctx): AsyncGenerator<GenerateEvent> {
          seenIds.push(req.requestId);
          counts.push(inFlight.count);
          const prompt = req.input.case === "prompt" ? req.input.value : "";
          yield delta("a");
          if (prompt === "fail") throw new ConnectError("the engine broke", Code.Internal);
          if (prompt === "wait") await new Promise((r) => ctx.signal.addEventListener("abort", r));
          yield delta("b");
        },
      }),
    { router: { interceptors: [inFlight.interceptor, requestLog({ logger, logPrompts: false, defaultModel: "m" })] } },
  );
  return { client: createClient(InferenceService, transport), inFlight, lines, counts, seenIds };
}

const ask = (prompt: string, requestId = "") => ({ requestId, input: { case: "prompt" as const, value: prompt } });

describe("interceptors around Generate", () => {
  it("count a call from its request to its stream's end, and log it once with a request id", async () => {
    const s = service();
    const texts: string[] = [];
    for await (const ev of s.client.generate(ask("ok"))) if (ev.event.case === "delta") texts.push(ev.event.value.text);
    expect(texts).toEqual(["a", "b"]);
    expect(s.counts).toEqual([1]);
    expect(s.inFlight.count).toBe(0);
    expect(s.lines).toHaveLength(1);
    expect(s.lines[0]).toMatchObject({ level: "info", code: "OK", model: "m", requestId: s.seenIds[0] });
    expect(s.seenIds[0]).toMatch(/^[0-9a-f-]{36}$/); // filled in before the handler saw the request
  });

  it("end a failed call, give the caller a generic message for an internal error, and log the details", async () => {
    const s = service();
    const err = await (async () => {
      for await (const _ of s.client.generate(ask("fail", "r-1"))) {
        // drain
      }
    })().then(
      () => undefined,
      (e) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.Internal);
    expect(err?.rawMessage).toBe("internal error; the service logged the details under request id r-1");
    expect(s.inFlight.count).toBe(0);
    expect(s.lines).toEqual([expect.objectContaining({ level: "error", code: "Internal", error: "the engine broke" })]);
  });

  it("end a call whose caller goes away mid-stream", async () => {
    const s = service();
    const ctrl = new AbortController();
    const run = (async () => {
      for await (const _ of s.client.generate(ask("wait"), { signal: ctrl.signal })) {
        expect(s.inFlight.count).toBe(1);
        ctrl.abort();
      }
    })();
    await expect(run).rejects.toMatchObject({ code: Code.Canceled });
    await expect.poll(() => s.inFlight.count).toBe(0);
    await expect.poll(() => s.lines.length).toBe(1);
    expect(s.lines[0]).toMatchObject({ level: "info", code: "Canceled" });
  });
});
