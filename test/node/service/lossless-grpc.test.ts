/**
 * TwigVLM's two lossless relations through the real service process on the
 * shipped demo model (models/demo), over real gRPC (a plain @grpc/grpc-js
 * client, HTTP/2): with greedy decoding, `twig` (TTP + SSD) streams exactly the
 * tokens of `ttp-only` (the same pruning, no drafts), keeping the same visual
 * tokens, and `ssd-only` exactly the tokens of `base`, for held-out scenes,
 * a description and a short question, at two retain budgets; the drafts are
 * really accepted (or the relations would hold trivially).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GpuServiceProcess, repoRoot, startDemoService } from "../../support/gpu-service.js";
import { grpcInferenceStub } from "../../support/service-client.js";

const dataDir = join(repoRoot, "training", "data");
const scenes = readFileSync(join(dataDir, "test.jsonl"), "utf8")
  .trim()
  .split("\n")
  .slice(0, 2)
  .map((l) => JSON.parse(l) as { image: string; describe: { prompt: string }; questions: { question: string }[] });

// biome-ignore lint/suspicious/noExplicitAny: grpc-js builds its stubs at run time and answers plain objects
type Plain = Record<string, any>;
let service: GpuServiceProcess;
// biome-ignore lint/suspicious/noExplicitAny: grpc-js stub
let stub: any;
let budgets: number[] = [];

beforeAll(async () => {
  service = await startDemoService();
  stub = grpcInferenceStub(service.port);
  const models: Plain[] = await new Promise((resolve, reject) =>
    stub.listModels({}, (err: Error | null, res: Plain) => (err ? reject(err) : resolve(res.models))),
  );
  const demo = models.find((m) => m.name === "demo") as Plain;
  // the model's default R-bar, and one halfway between the smallest and the largest it allows
  const lo = (demo.visualTokens * demo.twigK) / demo.numLayers;
  const hi = (demo.visualTokens * demo.finalWipeLayer) / demo.numLayers;
  budgets = [demo.defaultRetainBudget, Math.round((lo + hi) / 2)];
}, 120_000);
afterAll(async () => {
  stub?.close();
  await service?.stop();
});

interface Answer {
  ids: string[];
  kept: number[];
  drafted: number;
  accepted: number;
}

/** One greedy Generate over grpc-js, read to its end. */
function generate(image: Buffer, question: string, mode: string, retainBudget: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const answer: Answer = { ids: [], kept: [], drafted: 0, accepted: 0 };
    let finished = false;
    const call = stub.generate({
      model: "demo",
      image: { data: image },
      conversation: { messages: [{ role: "user", content: question }] },
      sampling: { maxTokens: 48, temperature: 0 },
      acceleration: { mode, retainBudget },
    });
    call.on("data", (ev: Plain) => {
      if (ev.started) answer.kept = ev.started.keptVisualIndices;
      if (ev.delta) answer.ids.push(...ev.delta.tokenIds.map(String));
      if (ev.finished) {
        finished = true;
        answer.drafted = Number(ev.finished.stats.draftedTokens);
        answer.accepted = Number(ev.finished.stats.acceptedTokens);
      }
    });
    call.on("end", () =>
      finished ? resolve(answer) : reject(new Error(`${mode}: the stream ended without Finished`)),
    );
    call.on("error", reject);
  });
}

describe("lossless over gRPC on the demo model", () => {
  it("twig gives ttp-only's tokens and kept visual tokens, and ssd-only gives base's, greedy", async () => {
    let pairs = 0;
    let accepted = 0;
    for (const scene of scenes) {
      const image = readFileSync(join(dataDir, scene.image));
      for (const question of [scene.describe.prompt, scene.questions[0].question]) {
        const base = await generate(image, question, "MODE_BASE", 0);
        const ssd = await generate(image, question, "MODE_SSD_ONLY", 0);
        expect(base.ids.length, question).toBeGreaterThan(0);
        expect(ssd.ids, `${scene.image} "${question}" ssd-only`).toEqual(base.ids);
        accepted += ssd.accepted;
        pairs++;
        for (const budget of budgets) {
          const ttp = await generate(image, question, "MODE_TTP_ONLY", budget);
          const twig = await generate(image, question, "MODE_TWIG", budget);
          expect(twig.ids, `${scene.image} "${question}" twig at R-bar ${budget}`).toEqual(ttp.ids);
          expect(twig.kept).toEqual(ttp.kept);
          expect(twig.kept.length).toBeLessThan(base.kept.length); // pruned
          accepted += twig.accepted;
          pairs++;
        }
      }
    }
    expect(pairs).toBe(scenes.length * 2 * (1 + budgets.length));
    expect(accepted).toBeGreaterThan(0); // drafts were accepted: the relations are not trivial
  }, 300_000);
});
