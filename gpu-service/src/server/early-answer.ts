/**
 * Answers a request with an error from its headers alone, before a byte of
 * its body is read, in the protocol it speaks: gRPC and gRPC-Web get a
 * trailers-only response (grpc-status in the headers), the Connect protocol an
 * end-of-stream message (streams) or an HTTP error with a JSON body (unary
 * calls). An HTTP/1.1 connection is closed after it, an HTTP/2 stream whose
 * request is still coming is reset.
 */
import type http from "node:http";
import http2 from "node:http2";
import type { ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, codeToString, endStreamFlag } from "@connectrpc/connect/protocol-connect";

export type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export function answerEarly(req: NodeRequest, res: NodeResponse, error: ConnectError): void {
  const type = String(req.headers["content-type"] ?? "");
  const headers: Record<string, string> = {};
  let status = 200;
  let body: Uint8Array | string = "";
  if (/^application\/grpc(-web(-text)?)?([+;]|$)/.test(type)) {
    headers["content-type"] = type;
    headers["grpc-status"] = String(error.code);
    headers["grpc-message"] = encodeURIComponent(error.rawMessage);
  } else if (/^application\/connect\+/.test(type)) {
    headers["content-type"] = type;
    const end = JSON.stringify({ error: { code: codeToString(error.code), message: error.rawMessage } });
    body = encodeEnvelope(endStreamFlag, new TextEncoder().encode(end));
  } else {
    status = codeToHttpStatus(error.code);
    headers["content-type"] = "application/json";
    body = JSON.stringify({ code: codeToString(error.code), message: error.rawMessage });
  }
  if (res instanceof http2.Http2ServerResponse) {
    // gRPC clients (grpc-js) read a status from the headers only when they end the stream
    const stream = res.stream;
    stream.respond({ ":status": status, ...headers }, { endStream: body.length === 0 });
    if (body.length > 0) stream.end(body);
    if (!req.complete) refuseRest(stream);
  } else {
    // Node closes the connection after this; listen.ts makes that close read on past the unread body
    res.writeHead(status, { ...headers, connection: "close" }).end(body);
  }
}

/**
 * Resets an HTTP/2 stream whose answer is out while its request is still coming:
 * after this turn, as Node closes a finished stream itself, so that the answer
 * goes first. CANCEL, because Node's client ignores a reset with NO_ERROR while
 * it still has data to send, and waits for flow control forever.
 */
export function refuseRest(stream: http2.ServerHttp2Stream): void {
  setImmediate(() => {
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  });
}
