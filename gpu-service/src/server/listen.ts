/**
 * One port for every client the service has: gRPC (HTTP/2 cleartext, for
 * @grpc/grpc-js and other gRPC stacks) and gRPC-Web / Connect over HTTP/1.1
 * (for the edge's fetch-based client). A plain TCP listener peeks at the first
 * bytes of each connection: the HTTP/2 client preface ("PRI * HTTP/2.0") goes
 * to an http2 server, anything else to an http server. Both run the same
 * connect-node handler.
 *
 * With a certificate and key the port speaks TLS instead: one http2 secure
 * server with `allowHTTP1`, where ALPN picks HTTP/2 (gRPC) or HTTP/1.1
 * (gRPC-Web, Connect) per connection, so no sniffing is needed.
 *
 * Every request is bounded before it is read: its headers are checked first
 * (`checkHeaders`, the service token) and a declared body over `readMaxBytes`
 * is refused at once, both answered without reading the body; connect-node
 * then stops any body, compressed or not, at `readMaxBytes` after
 * decompression (RESOURCE_EXHAUSTED). A connection with no request in progress
 * for `idleTimeoutMs` is closed, including one that never sends a byte.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import type { HeaderCheck } from "./auth.js";
import { answerEarly, type NodeRequest, type NodeResponse, refuseRest } from "./early-answer.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0");

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export interface TlsFiles {
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
}

export interface ListenOptions {
  host: string;
  /** 0: the system picks a free port (RunningServer.port says which). */
  port: number;
  interceptors?: Interceptor[];
  tls?: TlsFiles;
  /** Largest request message accepted, after decompression, in bytes. */
  readMaxBytes: number;
  /** A connection with no request in progress for this long is closed (ms). */
  idleTimeoutMs: number;
  /** Runs on each request's path and headers before its body is read; a refusal is answered at once. */
  checkHeaders?: HeaderCheck;
}

export async function listen(routes: (router: ConnectRouter) => void, opts: ListenOptions): Promise<RunningServer> {
  const connect = connectNodeAdapter({
    routes,
    interceptors: opts.interceptors ?? [],
    readMaxBytes: opts.readMaxBytes,
    // gzip only (what gRPC and Connect clients send when they compress); decompression stops at readMaxBytes
    acceptCompression: [compressionGzip],
  });
  const idle = opts.idleTimeoutMs;
  const handler = (req: NodeRequest, res: NodeResponse) => {
    answerBeforeClosing(req, res, Math.min(idle, 5000));
    const refusal = opts.checkHeaders?.(req.url ?? "", req.headers) ?? oversized(req, opts.readMaxBytes);
    if (refusal) answerEarly(req, res, refusal);
    else connect(req, res);
  };
  const h1 = http.createServer(h1Timeouts(idle), handler);
  // h1 never listens itself (the sniffer hands it sockets), and Node starts the checks of
  // headersTimeout and requestTimeout when a server starts listening
  h1.emit("listening");
  const h2 = http2.createServer({}, handler);
  closeIdleSessions(h2, idle);
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    // stream events are small writes: without this, Nagle's algorithm holds each one back
    // until the previous is acknowledged (up to the peer's 40 ms delayed ACK)
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };

  let server: net.Server;
  if (opts.tls) {
    const secure = http2.createSecureServer(
      { cert: opts.tls.cert, key: opts.tls.key, allowHTTP1: true, handshakeTimeout: idle },
      handler,
    );
    // the HTTP/1.1 connections ALPN hands to the compatibility layer read these
    Object.assign(secure, h1Timeouts(idle));
    closeIdleSessions(secure, idle);
    server = secure.on("connection", track);
  } else {
    server = sniffingServer(h1, h2, track, idle);
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : opts.port;

  return {
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        h1.close();
        for (const socket of sockets) socket.destroy();
      }),
  };
}

/**
 * A request may be answered before its body is read: refused from its headers,
 * or stopped by connect-node at a message over the limit. connect-node reads a
 * body with `for await`, and a loop that stops early destroys the request, and
 * with it the HTTP/1.1 socket or the HTTP/2 stream, before the error is
 * written: the caller saw the connection drop. Read without that, the answer
 * goes out first; then the rest of the body is refused: the HTTP/2 stream is reset; an HTTP/1.1
 * connection discards what still arrives, for at most `linger` ms, closing
 * (when it must) only after saying so (FIN) and reading on: closing with data
 * unread resets the connection, and the reset can take the answer with it.
 */
function answerBeforeClosing(req: NodeRequest, res: NodeResponse, linger: number): void {
  req[Symbol.asyncIterator] = () => req.iterator({ destroyOnReturn: false });
  if (res instanceof http2.Http2ServerResponse) {
    // connect-node answers through Node's compatibility layer, which always ends with trailers
    const stream = res.stream;
    const sendTrailers = stream.sendTrailers.bind(stream);
    stream.sendTrailers = (trailers) => {
      sendTrailers(trailers);
      if (!req.complete) refuseRest(stream);
    };
    return;
  }
  const socket = req.socket as LingeringSocket;
  socket.request = req as http.IncomingMessage;
  if (!socket.lingers) {
    socket.lingers = true;
    const destroySoon = socket.destroySoon.bind(socket);
    // Node closes a "Connection: close" exchange with destroySoon() once the answer is written
    socket.destroySoon = () => {
      if (socket.request?.complete !== false) return destroySoon();
      socket.end();
      discard(socket, linger);
    };
  }
  res.once("finish", () => {
    if (!req.complete) discard(socket, linger);
  });
}

type LingeringSocket = net.Socket & { destroySoon(): void; request?: http.IncomingMessage; lingers?: boolean };

/** Reads and drops the rest of the socket's request body; closes the socket if that takes longer than `linger` ms. */
function discard(socket: LingeringSocket, linger: number): void {
  socket.request?.resume();
  const timer = setTimeout(() => socket.destroy(), linger);
  socket.once("close", () => clearTimeout(timer));
}

/** RESOURCE_EXHAUSTED for a request that declares a body larger than the limit. */
function oversized(req: NodeRequest, readMaxBytes: number): ConnectError | undefined {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (!(declared > readMaxBytes)) return undefined;
  return new ConnectError(
    `the request body is ${declared} bytes; the limit is ${readMaxBytes}`,
    Code.ResourceExhausted,
  );
}

/**
 * HTTP/1.1: an idle keep-alive connection closes after `idle` ms, and a request's
 * headers must arrive within it (Node checks these every `connectionsCheckingInterval`).
 */
function h1Timeouts(idle: number) {
  return {
    keepAliveTimeout: idle,
    headersTimeout: idle,
    requestTimeout: Math.max(idle, 300_000),
    connectionsCheckingInterval: Math.max(10, Math.min(30_000, Math.floor(idle / 4))),
  };
}

/** HTTP/2: a session with no open stream for `idle` ms is closed (GOAWAY), from its start on. */
function closeIdleSessions(server: http2.Http2Server | http2.Http2SecureServer, idle: number): void {
  server.on("session", (session: http2.ServerHttp2Session) => {
    let open = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      timer = setTimeout(() => session.close(), idle);
    };
    arm();
    session.on("stream", (stream) => {
      open++;
      clearTimeout(timer);
      stream.once("close", () => {
        if (--open === 0 && !session.closed && !session.destroyed) arm();
      });
    });
    session.once("close", () => clearTimeout(timer));
  });
}

/**
 * A TCP listener that hands each connection to the HTTP/2 or the HTTP/1.1
 * server by its first bytes; one that sends nothing for `idle` ms is closed.
 */
function sniffingServer(
  h1: http.Server,
  h2: http2.Http2Server,
  track: (socket: net.Socket) => void,
  idle: number,
): net.Server {
  return net.createServer((socket) => {
    track(socket);
    const silent = setTimeout(() => socket.destroy(), idle);
    socket.once("close", () => clearTimeout(silent));
    socket.once("readable", function sniff() {
      const head: Buffer | null = socket.read();
      if (head === null) {
        socket.once("readable", sniff);
        return;
      }
      clearTimeout(silent);
      socket.unshift(head);
      const isH2 =
        head.length >= H2_PREFACE.length
          ? head.subarray(0, H2_PREFACE.length).equals(H2_PREFACE)
          : H2_PREFACE.subarray(0, head.length).equals(head);
      (isH2 ? h2 : h1).emit("connection", socket);
    });
    socket.on("error", () => socket.destroy());
  });
}
