/**
 * The engine's two kinds of error. `InvalidRequestError` is input it refuses: the service answers it with
 * INVALID_ARGUMENT, the command line prints it. `invariant` states what a plan (plan-request.ts) already
 * guarantees; when one fails the fault is the engine's own (INTERNAL), as with anything else it throws.
 */

/** Thrown for bad requests (unknown mode, undecodable image, prompt too long, ...): maps to INVALID_ARGUMENT. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
}

/** A broken promise of the plan or of a caller inside the engine: a bug, never the request's fault. */
export class InvariantError extends Error {
  override name = "InvariantError";
}

/**
 * Asserts what the request's validation already checked, so that a check below it cannot become a second
 * validation with its own bounds and messages.
 *
 * @example
 * invariant(imagePosition >= 0, "the prompt must hold exactly one image placeholder");
 */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}
