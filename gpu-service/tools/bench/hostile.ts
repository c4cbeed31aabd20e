/**
 * `npm run bench -- hostile [--model DIR]`: the real GPU service process
 * (default model: models/demo), sent the hostile requests of
 * hostile-requests.ts and two large but allowed images, one after another.
 * For each it prints the answer, how much of the body was sent before it, and
 * the service's resident memory (all threads, from /proc) before, at its peak
 * during (the kernel's high-water mark, reset before each request) and after.
 * The second part runs against a service with a token, unauthenticated.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { GenerateRequestSchema, InferenceService, Mode } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import sharp from "sharp";
import { blackPng, frame, gzipZeros, type HostileAnswer, postConnect, postGrpc } from "./hostile-requests.js";
import { type BenchService, startServiceProcess } from "./service-process.js";

const MiB = 1024 ** 2;
const demoModel = fileURLToPath(new URL("../../../models/demo", import.meta.url));

/** VmRSS or VmHWM of a process, in MiB. */
function memory(pid: number, field: "VmRSS" | "VmHWM"): number {
  const kb = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}

/** Resets the kernel's peak RSS of a process (clear_refs 5); false where that is not allowed. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

interface Row {
  request: string;
  answer: string;
  sent: string;
  before: number;
  peak: number;
  after: number;
}

async function measure(service: BenchService, request: string, send: () => Promise<{ answer: string; sent: string }>) {
  const pid = service.child.pid as number;
  await new Promise((r) => setTimeout(r, 300)); // let the last request's garbage settle
  const before = memory(pid, "VmRSS");
  const peakKnown = resetPeak(pid);
  const { answer, sent } = await send();
  const after = memory(pid, "VmRSS");
  const peak = peakKnown ? memory(pid, "VmHWM") : Number.NaN;
  return { request, answer, sent, before, peak, after };
}

const mib = (n: number) => `${(n / MiB).toFixed(n < MiB ? 2 : 0)} MiB`;
const wire = (a: HostileAnswer) => ({
  answer: `${a.code}: ${a.message}`.slice(0, 90),
  sent: `${mib(a.sent)} of ${mib(a.total)}`,
});

/** One Generate call with an image, to its end: "OK" or the code and message. */
async function generate(baseUrl: string, image: Uint8Array): Promise<{ answer: string; sent: string }> {
  const client = createClient(InferenceService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  const req = create(GenerateRequestSchema, {
    model: "bench",
    image: { source: { case: "data", value: image } },
    input: { case: "conversation", value: { messages: [{ role: "user", content: "describe the picture ." }] } },
    sampling: { maxTokens: 8 },
    acceleration: { mode: Mode.BASE },
  });
  try {
    for await (const _ of client.generate(req)) {
      // to the end
    }
    return { answer: "OK (answered)", sent: mib(image.length) };
  } catch (err) {
    const e = ConnectError.from(err);
    return { answer: `${Code[e.code]}: ${e.rawMessage}`.slice(0, 90), sent: mib(image.length) };
  }
}

function printTable(title: string, rows: Row[]): void {
  console.log(`\n${title}\n`);
  console.log("| request | answer | body sent before the answer | RSS before | peak during | after |");
  console.log("|---|---|---|---|---|---|");
  const f = (x: number) => (Number.isNaN(x) ? "n/a" : `${x.toFixed(0)} MB`);
  for (const r of rows)
    console.log(`| ${r.request} | ${r.answer} | ${r.sent} | ${f(r.before)} | ${f(r.peak)} | ${f(r.after)} |`);
}

export async function benchHostile(args: { model?: string }): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), "twigserve-hostile-"));
  const modelsDir = join(scratch, "models");
  mkdirSync(modelsDir);
  symlinkSync(resolve(args.model ?? demoModel), join(modelsDir, "bench"));
  const bomb = await gzipZeros(1024 ** 3);
  const thin = await sharp({ create: { width: 8192, height: 410, channels: 3, background: "#807060" } })
    .png()
    .toBuffer();
  // a large photo-like JPEG (a smooth ramp with a little texture): 6000 x 4000, 24 Mpixels
  const ramp = Buffer.alloc(6000 * 4000 * 3);
  for (let p = 0; p < 6000 * 4000; p++) {
    const x = p % 6000;
    const y = Math.floor(p / 6000);
    ramp[p * 3] = (x >> 4) & 255;
    ramp[p * 3 + 1] = (y >> 4) & 255;
    ramp[p * 3 + 2] = (x ^ y) & 15;
  }
  const photo = await sharp(ramp, { raw: { width: 6000, height: 4000, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  try {
    const open = await startServiceProcess(modelsDir, { TWIG_ENGINE_THREADS: "1" });
    const url = `http://127.0.0.1:${open.port}`;
    const rows: Row[] = [];
    try {
      rows.push(
        await measure(open, "good request (the demo scene size, 96x96)", () =>
          generate(url, readFileSync(join(demoModel, "..", "..", "training", "data", "test", "0000.png"))),
        ),
        await measure(open, `gzip bomb, 1 GiB of zeros in ${mib(bomb.length)}, Connect`, async () =>
          wire(await postConnect(url, frame(bomb, true), { headers: { "connect-content-encoding": "gzip" } })),
        ),
        await measure(open, "gzip bomb, gRPC (HTTP/2)", async () =>
          wire(await postGrpc(url, bomb, { compressed: true })),
        ),
        await measure(open, "body declared as 256 MiB, Connect", async () =>
          wire(await postConnect(url, { zeros: 256 * MiB })),
        ),
        await measure(open, "a 200 MiB message in a 64 MiB chunked body, Connect", async () => {
          const head = Buffer.alloc(5);
          head.writeUInt32BE(200 * MiB, 1);
          return wire(await postConnect(url, Buffer.concat([head, Buffer.alloc(64 * MiB)]), { chunked: true }));
        }),
        await measure(open, "a 64 MiB gRPC message (HTTP/2)", async () =>
          wire(await postGrpc(url, Buffer.alloc(64 * MiB))),
        ),
        await measure(open, `PNG of 4,000,000 x 4 (${mib(blackPng(4_000_000, 4).length)})`, () =>
          generate(url, blackPng(4_000_000, 4)),
        ),
        await measure(open, `PNG of 8192 x 410, 20:1 (${mib(thin.length)})`, () => generate(url, thin)),
        await measure(open, `JPEG of 6000 x 4000 (${mib(photo.length)})`, () => generate(url, photo)),
        await measure(open, "good request again", () =>
          generate(url, readFileSync(join(demoModel, "..", "..", "training", "data", "test", "0000.png"))),
        ),
      );
    } finally {
      open.child.kill("SIGTERM");
    }
    printTable("GPU service without a token (resident memory of the whole process, MB):", rows);

    const guarded = await startServiceProcess(modelsDir, { TWIG_ENGINE_THREADS: "1", TWIG_SERVICE_TOKEN: "bench" });
    const gurl = `http://127.0.0.1:${guarded.port}`;
    const guardedRows: Row[] = [];
    try {
      guardedRows.push(
        await measure(guarded, "gzip bomb + 256 MiB more, no token, Connect", async () =>
          wire(
            await postConnect(gurl, Buffer.concat([frame(bomb, true), Buffer.alloc(256 * MiB)]), {
              headers: { "connect-content-encoding": "gzip" },
            }),
          ),
        ),
        await measure(guarded, "gzip bomb + 64 MiB more, no token, gRPC", async () =>
          wire(await postGrpc(gurl, Buffer.concat([bomb, Buffer.alloc(64 * MiB)]), { compressed: true })),
        ),
      );
    } finally {
      guarded.child.kill("SIGTERM");
    }
    printTable("GPU service with TWIG_SERVICE_TOKEN, requests without it:", guardedRows);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
