/**
 * Requests an attacker would send to the GPU service, written at the wire
 * level (no client library would send them): a gzip bomb in a Connect
 * envelope or a gRPC message, bodies larger than any limit, garbage, and an
 * image whose header declares a huge canvas. Each
 * sender stops writing as soon as the service answers and reports how much of
 * the body it had sent by then. Used by the hostile-input tests and by
 * `npm run bench -- hostile`.
 */
import http2 from "node:http2";
import net from "node:net";
import { createGzip, deflateSync } from "node:zlib";

const GENERATE = "/twigvlm.v1.InferenceService/Generate";

/** gzip of `n` zero bytes, compressed in 1 MiB pieces (the n bytes never exist at once). */
export async function gzipZeros(n: number): Promise<Buffer> {
  const gzip = createGzip({ level: 9 });
  const out: Buffer[] = [];
  gzip.on("data", (b: Buffer) => out.push(b));
  const done = new Promise<void>((resolve, reject) => {
    gzip.on("end", resolve);
    gzip.on("error", reject);
  });
  const piece = Buffer.alloc(1 << 20);
  for (let left = n; left > 0; left -= piece.length) {
    const chunk = left >= piece.length ? piece : piece.subarray(0, left);
    if (!gzip.write(chunk)) await new Promise((r) => gzip.once("drain", r));
  }
  gzip.end();
  await done;
  return Buffer.concat(out);
}

/** One length-prefixed message (Connect streaming and gRPC framing): flags, big-endian length, payload. */
export function frame(payload: Uint8Array, compressed: boolean): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

export interface HostileAnswer {
  /** HTTP status. */
  status: number;
  /** The RPC's error code as the protocol names it ("resource_exhausted", or the gRPC number), or "ok". */
  code: string;
  message: string;
  /** Bytes of the body written before the answer came, and the body's full size. */
  sent: number;
  total: number;
}

/** The body as pieces of at most 1 MiB, so that sending can stop between them. */
function* pieces(body: Buffer | { zeros: number }): Generator<Buffer> {
  if (Buffer.isBuffer(body)) {
    for (let i = 0; i < body.length; i += 1 << 20) yield body.subarray(i, i + (1 << 20));
    return;
  }
  const zero = Buffer.alloc(1 << 20);
  for (let left = body.zeros; left > 0; left -= zero.length) yield left >= zero.length ? zero : zero.subarray(0, left);
}

/** Resolves when `stream` may be written again, or has closed. */
function writable(stream: NodeJS.WritableStream & NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}

const sizeOf = (body: Buffer | { zeros: number }) => (Buffer.isBuffer(body) ? body.length : body.zeros);

/** The error of a Connect answer: an end-of-stream envelope (streams) or a JSON body (HTTP errors). */
function connectError(status: number, type: string, body: Buffer): { code: string; message: string } {
  try {
    if (status === 200 && type.startsWith("application/connect+")) {
      for (let at = 0; at + 5 <= body.length; ) {
        const length = body.readUInt32BE(at + 1);
        if (body[at] & 2) {
          const end = JSON.parse(body.subarray(at + 5, at + 5 + length).toString());
          return end.error ? { code: end.error.code, message: end.error.message ?? "" } : { code: "ok", message: "" };
        }
        at += 5 + length;
      }
      return { code: "ok", message: "" };
    }
    const json = JSON.parse(body.toString());
    return { code: json.code, message: json.message ?? "" };
  } catch {
    return { code: `http ${status}`, message: body.toString().slice(0, 200) };
  }
}

/** An HTTP/1.1 answer read off a raw socket. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** Body bytes written before the answer started to arrive. */
  sent: number;
  /** The socket, still open when the service kept the connection alive (then it is the caller's to close). */
  socket: net.Socket;
}

/** The body of an HTTP/1.1 message, undoing chunked transfer coding. */
function dechunk(raw: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < raw.length; ) {
    const eol = raw.indexOf("\r\n", at);
    const size = Number.parseInt(raw.subarray(at, eol).toString(), 16);
    if (!(size > 0)) break;
    out.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(out);
}

/**
 * Writes one HTTP/1.1 request on a raw socket, the body piece by piece until the
 * answer starts to arrive (a write the service refuses, once it has closed, is
 * ignored), and reads the whole answer. A raw socket, because Node's client
 * drops an answer that arrives while its write fails.
 */
export function rawExchange(
  port: number,
  head: string,
  body: Iterable<Buffer>,
  opts: { chunked?: boolean } = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    let sent = 0;
    let settled = false;
    const finish = (complete: boolean) => {
      if (settled) return;
      const all = Buffer.concat(received);
      const split = all.indexOf("\r\n\r\n");
      if (split < 0) {
        if (!complete) return;
        settled = true;
        reject(new Error(`no HTTP answer (${all.length} bytes: ${all.subarray(0, 80).toString()})`));
        return;
      }
      const lines = all.subarray(0, split).toString().split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const rest = all.subarray(split + 4);
      const chunked = headers["transfer-encoding"] === "chunked";
      const length = Number(headers["content-length"] ?? Number.NaN);
      const done = chunked ? rest.includes("0\r\n\r\n") : Number.isFinite(length) ? rest.length >= length : complete;
      if (!done && !complete) return;
      settled = true;
      const status = Number(lines[0].split(" ")[1]);
      resolve({ status, headers, body: chunked ? dechunk(rest) : rest, sent, socket });
    };
    socket.on("data", (d: Buffer) => {
      received.push(d);
      finish(false);
    });
    socket.on("close", () => finish(true));
    socket.on("error", () => {}); // EPIPE or a reset once the service has answered and closed
    socket.on("connect", async () => {
      socket.write(head);
      for (const piece of body) {
        if (received.length > 0 || socket.destroyed || socket.writableEnded) break;
        sent += piece.length;
        const data = opts.chunked
          ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n")])
          : piece;
        if (!socket.write(data)) await writable(socket);
      }
      if (opts.chunked && received.length === 0 && !socket.destroyed) socket.write("0\r\n\r\n");
    });
  });
}

/**
 * POSTs `body` to Generate with the Connect streaming protocol over HTTP/1.1
 * (`headers` added), with a content-length unless `chunked`.
 */
export async function postConnect(
  baseUrl: string,
  body: Buffer | { zeros: number },
  opts: { headers?: Record<string, string>; chunked?: boolean } = {},
): Promise<HostileAnswer> {
  const url = new URL(baseUrl);
  const total = sizeOf(body);
  const headers: Record<string, string> = {
    host: url.host,
    "content-type": "application/connect+proto",
    connection: "close",
    ...opts.headers,
    ...(opts.chunked ? { "transfer-encoding": "chunked" } : { "content-length": String(total) }),
  };
  const head = `POST ${GENERATE} HTTP/1.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("")}\r\n`;
  const answer = await rawExchange(Number(url.port), head, pieces(body), { chunked: opts.chunked });
  answer.socket.destroy();
  const err = connectError(answer.status, answer.headers["content-type"] ?? "", answer.body);
  return { status: answer.status, ...err, sent: answer.sent, total };
}

/** POSTs one gRPC message (`payload`, gzip-encoded when `compressed`) to Generate over HTTP/2. */
export function postGrpc(
  baseUrl: string,
  payload: Buffer,
  opts: { compressed?: boolean; headers?: Record<string, string> } = {},
): Promise<HostileAnswer> {
  const body = frame(payload, opts.compressed ?? false);
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": GENERATE,
      "content-type": "application/grpc+proto",
      te: "trailers",
      ...(opts.compressed ? { "grpc-encoding": "gzip" } : {}),
      ...opts.headers,
    });
    let sent = 0;
    let status = 0;
    let grpc: { code: string; message: string } = { code: "", message: "" };
    const read = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined)
        grpc = { code: String(h["grpc-status"]), message: decodeURIComponent(String(h["grpc-message"] ?? "")) };
    };
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      read(h);
    });
    stream.on("trailers", read);
    stream.on("data", () => {});
    // the answer is complete: stop sending (grpc-js does the same)
    stream.on("end", () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on("close", () => {
      session.close();
      resolve({ status, ...grpc, sent, total: body.length });
    });
    stream.on("error", () => {}); // a reset after the answer is the expected end
    (async () => {
      for (const piece of pieces(body)) {
        if (status || stream.destroyed) return;
        sent += piece.length;
        if (!stream.write(piece)) await writable(stream);
      }
      if (!stream.destroyed) stream.end();
    })();
  });
}

/** A valid PNG of width x height black pixels, written byte by byte (tiny: its rows deflate to almost nothing; no encoder would write 4,000,000 x 4). */
export function blackPng(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, body: Buffer) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    const tail = Buffer.alloc(4);
    const typed = Buffer.concat([Buffer.from(type, "ascii"), body]);
    tail.writeUInt32BE(crc(typed));
    return Buffer.concat([head, typed, tail]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // 8-bit greyscale
  const rows = Buffer.alloc((width + 1) * height); // filter byte 0 and zeros
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(rows, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
