/**
 * An AbortController that aborts when the client of a request goes away before
 * its response has started (the request's own signal, which the runtime
 * aborts with the `enable_request_signal` compatibility flag). A streamed
 * response learns the same from its body being cancelled instead.
 */
export function abortOnDisconnect(req: Request): AbortController {
  const abort = new AbortController();
  const gone = () => abort.abort(new Error("the client went away"));
  if (req.signal.aborted) gone();
  else req.signal.addEventListener("abort", gone, { once: true });
  return abort;
}
