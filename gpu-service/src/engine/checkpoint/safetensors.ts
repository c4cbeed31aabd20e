/**
 * safetensors files: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}}` (plus "__metadata__"),
 * then the raw little-endian tensor bytes. Tensors are read one at a time by
 * offset straight into their fp32 destination, so a large file never sits in
 * the JS heap whole.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import type { Tensor } from "../weights.js";

export type SafetensorsDtype = "F32" | "F16" | "BF16";
const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorEntry {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

const MAX_HEADER = 100 * 1024 * 1024;

/** f16 bits → f32 value. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

export class SafetensorsFile {
  readonly entries: Map<string, TensorEntry>;
  readonly metadata: Record<string, string>;
  private readonly dataStart: number;

  private constructor(
    readonly path: string,
    private readonly fd: number,
    size: number,
  ) {
    const lenBuf = Buffer.alloc(8);
    if (size < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8)
      throw new CheckpointError(`${path}: too short to be a safetensors file`);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 1 || headerLen > MAX_HEADER || 8 + headerLen > size) {
      throw new CheckpointError(`${path}: bad safetensors header length ${headerLen} (file is ${size} bytes)`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString("utf8"));
    } catch (err) {
      throw new CheckpointError(`${path}: the safetensors header is not valid JSON (${(err as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new CheckpointError(`${path}: the safetensors header is not a JSON object`);
    }
    this.dataStart = 8 + headerLen;
    this.metadata = (header.__metadata__ as Record<string, string>) ?? {};
    this.entries = new Map();
    for (const [name, raw] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (
        typeof e?.dtype !== "string" ||
        !Array.isArray(e.shape) ||
        !Array.isArray(e.data_offsets) ||
        e.data_offsets.length !== 2
      ) {
        throw new CheckpointError(`${path}: tensor "${name}" has a malformed header entry`);
      }
      const [begin, end] = e.data_offsets as number[];
      if (this.dataStart + end > size) {
        throw new CheckpointError(
          `${path}: tensor "${name}" ends at byte ${this.dataStart + end} but the file has ${size} bytes (truncated?)`,
        );
      }
      this.entries.set(name, { dtype: e.dtype, shape: e.shape as number[], begin, end });
    }
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      throw new CheckpointError(`${path}: cannot open (${(err as Error).message})`);
    }
    try {
      return new SafetensorsFile(path, fd, fstatSync(fd).size);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Reads one tensor as fp32, converting F16/BF16. */
  read(name: string): Tensor {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(`${this.path}: missing tensor "${name}"`);
    const dtype = e.dtype as SafetensorsDtype;
    if (!(dtype in BYTES))
      throw new CheckpointError(`${this.path}: tensor "${name}" has dtype ${e.dtype}; expected F32, F16 or BF16`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (e.end - e.begin !== count * BYTES[dtype]) {
      throw new CheckpointError(
        `${this.path}: tensor "${name}" holds ${e.end - e.begin} bytes for shape [${e.shape}] of ${dtype}`,
      );
    }
    const data = new Float32Array(count);
    if (dtype === "F32") {
      readSync(this.fd, new Uint8Array(data.buffer), 0, count * 4, this.dataStart + e.begin);
      return { shape: e.shape, data };
    }
    const raw = new Uint16Array(count);
    readSync(this.fd, new Uint8Array(raw.buffer), 0, count * 2, this.dataStart + e.begin);
    if (dtype === "BF16") {
      const u32 = new Uint32Array(data.buffer);
      for (let i = 0; i < count; i++) u32[i] = raw[i] << 16;
    } else {
      for (let i = 0; i < count; i++) data[i] = halfToFloat(raw[i]);
    }
    return { shape: e.shape, data };
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Writes fp32 tensors as a safetensors file (checkpoints for tests and benchmarks, traces).
 * The header is computed from the shapes and each tensor's data is read once, in order, and
 * written straight to the file: a tensor whose `data` is a getter that makes it on demand
 * (sized-model.ts) is never held with the others, so a checkpoint of several GB streams to disk.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata: Record<string, string> = {},
): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * 4;
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((json.length + 8) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = openSync(path, "w");
  try {
    writeAll(fd, head);
    writeAll(fd, Buffer.from(json));
    for (const [name, t] of entries) {
      const data = t.data;
      if (data.length !== t.shape.reduce((a, b) => a * b, 1))
        throw new RangeError(`tensor "${name}": ${data.length} values for shape [${t.shape}]`);
      writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}
