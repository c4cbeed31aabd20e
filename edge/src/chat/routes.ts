/**
 * POST /v1/chat/completions: validate, resolve the picture or video, reserve the tenant's
 * budget in its limiter, open a Generate stream on a GPU shard, and answer as
 * SSE chunks (stream: true) or one chat.completion object. Whatever happens,
 * the reservation is settled with the tokens really used.
 */
import { create } from "@bufbuild/protobuf";
import { GenerateRequestSchema } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import { Hono } from "hono";
import type { AppEnv } from "../app-types.js";
import { settingsOf } from "../config/settings.js";
import { currentRoutes } from "../gpu/route-table.js";
import { type OpenedGeneration, openGeneration } from "../gpu/router.js";
import { readJson } from "../http/body.js";
import { abortOnDisconnect } from "../http/disconnect.js";
import { ApiError } from "../http/errors.js";
import { Grant } from "../limits/grant.js";
import { type Progress, streamed, usedTokens, whole } from "./answer.js";
import { estimatePromptTokens } from "./estimate.js";
import { resolveImage } from "./image.js";
import type { CompletionIds } from "./openai-shape.js";
import { type ChatRequest, parseChatRequest, shown } from "./request.js";
import { type ResolvedVideo, resolveFrames, resolveVideoUrl } from "./video.js";

export const chatRoutes = new Hono<AppEnv>();

chatRoutes.post("/completions", async (c) => {
  const tenant = c.get("tenant");
  const requestId = c.get("requestId");
  const settings = settingsOf(c.env);
  const body = await readJson(c.req.raw, settings.maxRequestBytes, "MAX_REQUEST_BYTES");
  const routes = await currentRoutes(c.env, settings.routesCacheMs);
  const req = parseChatRequest(body, routes.keys().next().value);
  const urls = routes.get(req.model);
  if (!urls) throw new ApiError(404, `the model ${shown(req.model)} does not exist`, "model_not_found", "model");
  if (tenant.models.length > 0 && !tenant.models.includes(req.model))
    throw new ApiError(403, `this API key may not use the model ${shown(req.model)}`, "model_not_allowed", "model");
  const media = req.media;
  const visual =
    media.kind === "image"
      ? { image: await resolveImage(media.url, c.env, tenant.id, settings.maxImageBytes) }
      : media.kind === "video"
        ? { video: resolveVideoUrl(media.url, settings.maxVideoBytes) }
        : {
            video: await resolveFrames(media.urls, c.env, tenant.id, {
              maxImageBytes: settings.maxImageBytes,
              maxFrames: settings.maxVideoFrames,
            }),
          };

  const reserved = estimatePromptTokens(req) + req.maxTokens;
  // From here on the grant is settled exactly once, even if the client goes away (see limits/grant.ts).
  const grant = await Grant.admit(c.env, c.executionCtx, tenant.id, reserved, tenant.limits);
  for (const [k, v] of Object.entries(grant.headers)) c.header(k, v);
  const progress: Progress = { completionTokens: 0 };
  const settle = () => grant.settle(usedTokens(progress));
  // A client that goes away before the answer starts cancels the GPU call (a streamed answer's body does it after).
  const abort = abortOnDisconnect(c.req.raw);
  let opened: OpenedGeneration;
  try {
    opened = await openGeneration(req.model, urls, generateRequest(req, visual, requestId, tenant.id), {
      token: c.env.GPU_SERVICE_TOKEN,
      signal: abort.signal,
      limits: {
        deadlineMs: settings.gpuDeadlineMs,
        connectTimeoutMs: settings.gpuConnectTimeoutMs,
        stallTimeoutMs: settings.gpuStallTimeoutMs,
      },
      cooldown: { openMs: settings.shardCooldownMs, maxOpenMs: settings.shardMaxCooldownMs },
    });
  } catch (err) {
    settle();
    throw err;
  }
  const ids: CompletionIds = { id: `chatcmpl-${requestId}`, created: Math.floor(Date.now() / 1000), model: req.model };
  return req.stream ? streamed(c, req, ids, opened, progress, abort, settle) : whole(c, ids, opened, progress, settle);
});

function generateRequest(
  req: ChatRequest,
  visual: { image?: { bytes: Uint8Array; mediaType: string }; video?: ResolvedVideo },
  requestId: string,
  tenantId: string,
) {
  const { image, video } = visual;
  return create(GenerateRequestSchema, {
    model: req.model,
    requestId,
    tenantId,
    image: image ? { source: { case: "data", value: image.bytes }, mediaType: image.mediaType } : undefined,
    video: video ? { data: video.data, frames: video.frames, mediaType: video.mediaType } : undefined,
    input: { case: "conversation", value: { messages: req.messages } },
    sampling: {
      maxTokens: req.maxTokens,
      temperature: req.temperature,
      // The GPU service reads top_p 0 as "unset" (1); OpenAI's 0 means "only the top token".
      topP: req.topP === 0 ? 1e-6 : req.topP,
      seed: req.seed,
      stop: req.stop,
    },
    acceleration: req.acceleration,
  });
}
