/**
 * The edge fuzz test's corpus: hostile and broken inputs, each a file in
 * test/fuzz/corpus/ with a line in its index (corpus.json) saying what it is.
 * Everything here is built deterministically by `corpusFiles()`: regenerate
 * with `npx tsx test/fuzz/make-corpus.ts`; the fuzz test checks that the
 * committed files are what this code builds.
 *
 *   images/     truncated, corrupt, wrong magic, zero bytes, a PNG whose header
 *               declares 100000 x 100000 with almost no data, a real PNG bomb
 *               (20000 x 20000 one-bit pixels deflated to a few kB), a real
 *               4,000,000 x 4 PNG
 *   multipart/  broken multipart/form-data bodies, with their Content-Type
 *   json/       malformed JSON texts
 */
import { deflateSync } from "node:zlib";

export interface CorpusEntry {
  /** Path under test/fuzz/corpus/. */
  file: string;
  kind: "image" | "multipart" | "json";
  /** What it is. */
  about: string;
  /** For multipart bodies: the Content-Type to send them with. */
  contentType?: string;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG of `width` x `height` with the given bit depth and colour type, and `idat` as its (deflated) pixel data. */
function png(width: number, height: number, bitDepth: number, colourType: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colourType;
  return Buffer.concat([SIGNATURE, chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", Buffer.alloc(0))]);
}

/** A one-bit grayscale PNG of zeros, every row filtered "none": what deflates best. */
function zerosPng(width: number, height: number): Buffer {
  const row = 1 + Math.ceil(width / 8);
  return png(width, height, 1, 0, deflateSync(Buffer.alloc(row * height), { level: 9 }));
}

/** A small real RGB PNG (a diagonal gradient), the base of the truncated and corrupted ones. */
function smallPng(): Buffer {
  const w = 48;
  const rows: Buffer[] = [];
  for (let y = 0; y < w; y++) {
    const row = Buffer.alloc(1 + w * 3);
    for (let x = 0; x < w; x++) row.set([(x * 5) & 0xff, (y * 5) & 0xff, ((x + y) * 3) & 0xff], 1 + x * 3);
    rows.push(row);
  }
  return png(w, w, 8, 2, deflateSync(Buffer.concat(rows)));
}

const text = (s: string) => Buffer.from(s, "latin1");

const BOUNDARY = "----twigfuzz";
const part = (headers: string, body: string | Buffer) =>
  Buffer.concat([
    text(`--${BOUNDARY}\r\n${headers}\r\n\r\n`),
    typeof body === "string" ? text(body) : body,
    text("\r\n"),
  ]);
const end = text(`--${BOUNDARY}--\r\n`);
const FILE_HEADERS = 'Content-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png';

/** Every corpus file and its bytes. */
export function corpusFiles(): { entry: CorpusEntry; bytes: Buffer }[] {
  const base = smallPng();
  const files: { entry: CorpusEntry; bytes: Buffer }[] = [];
  const image = (name: string, about: string, bytes: Buffer) =>
    files.push({ entry: { file: `images/${name}`, kind: "image", about }, bytes });
  const multipart = (
    name: string,
    about: string,
    bytes: Buffer,
    contentType = `multipart/form-data; boundary=${BOUNDARY}`,
  ) => files.push({ entry: { file: `multipart/${name}`, kind: "multipart", about, contentType }, bytes });
  const json = (name: string, about: string, body: string) =>
    files.push({ entry: { file: `json/${name}`, kind: "json", about }, bytes: text(body) });

  image("truncated.png", "a real PNG cut off in its pixel data", base.subarray(0, Math.floor(base.length * 0.6)));
  image(
    "bad-crc.png",
    "a real PNG with its pixel data's checksum broken",
    Buffer.from(base).fill(0, base.length - 20, base.length - 16),
  );
  image(
    "flipped.png",
    "a real PNG with bytes of its compressed pixels flipped",
    (() => {
      const b = Buffer.from(base);
      for (let i = 60; i < b.length - 20; i += 37) b[i] ^= 0xa5;
      return b;
    })(),
  );
  image(
    "bomb-header.png",
    "a PNG whose header declares 100000 x 100000 pixels, with a few bytes of data",
    png(100_000, 100_000, 8, 2, deflateSync(Buffer.alloc(64))),
  );
  image(
    "bomb.png",
    "a real PNG bomb: 20000 x 20000 one-bit pixels (50 MB) deflated to a few kB",
    zerosPng(20_000, 20_000),
  );
  image("wide-4000000x4.png", "a real PNG of 4,000,000 x 4 pixels", zerosPng(4_000_000, 4));
  image("zero-bytes.png", "no bytes at all", Buffer.alloc(0));
  image(
    "wrong-magic.png",
    "a PNG with its signature's last byte wrong",
    Buffer.concat([SIGNATURE.subarray(0, 7), Buffer.from([0x0b]), base.subarray(8)]),
  );
  image("text.png", "plain text named .png", text("this is not an image, whatever its name says\n"));
  image("signature-only.png", "the PNG signature and nothing else", SIGNATURE);
  image(
    "corrupt.jpg",
    "a JPEG start-of-image marker followed by garbage",
    Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), text("JFIF garbage ".repeat(40))]),
  );
  image(
    "truncated.gif",
    "a GIF89a header whose image data never comes",
    text("GIF89a\x10\x00\x10\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,"),
  );
  image(
    "corrupt.webp",
    "a RIFF WEBP header with a broken VP8 chunk",
    Buffer.concat([
      text("RIFF"),
      Buffer.from([40, 0, 0, 0]),
      text("WEBPVP8 "),
      Buffer.from([20, 0, 0, 0]),
      text("not a vp8 bitstream!!"),
    ]),
  );

  multipart(
    "no-boundary.bin",
    "multipart without a boundary parameter",
    Buffer.concat([part(FILE_HEADERS, base), end]),
    "multipart/form-data",
  );
  multipart(
    "wrong-boundary.bin",
    "a body whose boundary is not the declared one",
    Buffer.concat([part(FILE_HEADERS, base), end]),
    "multipart/form-data; boundary=something-else",
  );
  multipart(
    "unterminated.bin",
    "a file part that never ends",
    Buffer.concat([text(`--${BOUNDARY}\r\n${FILE_HEADERS}\r\n\r\n`), base]),
  );
  multipart(
    "no-file-part.bin",
    "only a purpose field",
    Buffer.concat([part('Content-Disposition: form-data; name="purpose"', "vision"), end]),
  );
  multipart(
    "file-as-text.bin",
    "a 'file' field without a filename (a text field)",
    Buffer.concat([part('Content-Disposition: form-data; name="file"', "hello"), end]),
  );
  multipart("empty-file.bin", "a file part with no bytes", Buffer.concat([part(FILE_HEADERS, ""), end]));
  multipart("text-file.bin", "a file part holding text", Buffer.concat([part(FILE_HEADERS, "just some words"), end]));
  multipart(
    "no-headers.bin",
    "a part without Content-Disposition",
    Buffer.concat([part("Content-Type: image/png", base), end]),
  );
  multipart("garbage.bin", "bytes that are no multipart at all", text("\x00\x01\x02 this is not multipart \xff\xfe"));
  multipart("json-as-multipart.bin", "a JSON body sent as multipart", text('{"file": "x"}'));

  json(
    "truncated.json",
    "a request cut off",
    '{"model": "demo", "messages": [{"role": "user", "content": [{"type": "te',
  );
  json("trailing-comma.json", "a trailing comma", '{"model": "demo", "messages": [],}');
  json("single-quotes.json", "single-quoted strings", "{'model': 'demo'}");
  json("comments.json", "a comment", '{"model": "demo" /* which one */, "messages": []}');
  json("nan.json", "NaN as a number", '{"model": "demo", "temperature": NaN, "messages": []}');
  json("two-values.json", "two JSON values", '{"model": "demo"} {"model": "demo"}');
  json("bare-key.json", "an unquoted key", '{model: "demo"}');
  json("control-in-string.json", "a raw control character in a string", '{"model": "de\u0001mo", "messages": []}');
  json(
    "lone-surrogate.json",
    "an escaped lone surrogate where a model name goes",
    '{"model": "\\ud800", "messages": []}',
  );
  json("array.json", "an array, not an object", "[1, 2, 3]");
  json("number.json", "a number, not an object", "42");
  json("null.json", "null", "null");
  json("string.json", "a string, not an object", '"describe the picture"');
  json("whitespace.json", "only whitespace", " \n\t ");
  return files;
}
