/**
 * The engine's one error class for input it refuses: the service answers it with INVALID_ARGUMENT,
 * the command line prints it. Anything else an engine throws is a fault of its own (INTERNAL).
 */

/** Thrown for bad requests (unknown mode, undecodable image, prompt too long, ...): maps to INVALID_ARGUMENT. */
export class InvalidRequestError extends Error {
  override name = "InvalidRequestError";
}
