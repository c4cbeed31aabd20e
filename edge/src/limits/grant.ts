/**
 * One admitted request's reservation in its tenant's limiter, settled exactly
 * once whatever ends the request: finished, failed, or abandoned by a client
 * that went away.
 *
 * When a client disconnects, the Workers runtime tears the request's context
 * down at once unless work is pending in `waitUntil`; code after an `await`
 * would never run, and the concurrency slot would stay taken until its lease
 * ran out. So the grant puts its own settlement in `waitUntil` before it asks
 * the limiter: the context then stays alive long enough for the request's
 * abort signal to stop the GPU call and for the settlement to reach the limiter.
 */
import type { TenantLimits } from "../auth/store.js";
import type { Env } from "../env.js";
import { rateLimitError, rateLimitHeaders } from "./headers.js";

export class Grant {
  private done = false;

  private constructor(
    private readonly limiter: DurableObjectStub<import("./limiter.js").TenantLimiter>,
    readonly id: string,
    readonly headers: Record<string, string>,
    private readonly finish: (settlement: Promise<unknown>) => void,
  ) {}

  /**
   * Admits a request reserving `tokens` for the tenant, or throws the 429. The
   * context is kept alive (waitUntil) until the grant is settled.
   */
  static async admit(
    env: Env,
    ctx: ExecutionContext,
    tenantId: string,
    tokens: number,
    limits: TenantLimits,
  ): Promise<Grant> {
    let finish!: (settlement: Promise<unknown>) => void;
    ctx.waitUntil(
      new Promise<Promise<unknown>>((resolve) => {
        finish = resolve;
      }).then((settlement) => settlement),
    );
    const limiter = env.LIMITER.get(env.LIMITER.idFromName(tenantId));
    // The grant's id is the edge's own: a caller-chosen x-request-id must not be able to overwrite another grant.
    const id = crypto.randomUUID();
    try {
      const admission = await limiter.admit(id, tokens, limits);
      if (!admission.ok) throw rateLimitError(admission);
      return new Grant(limiter, id, rateLimitHeaders(admission), finish);
    } catch (err) {
      finish(Promise.resolve());
      throw err;
    }
  }

  /** Replaces the reservation with the tokens really used and frees the slot (once; later calls do nothing). */
  settle(usedTokens: number): void {
    if (this.done) return;
    this.done = true;
    this.finish(
      this.limiter.settle(this.id, usedTokens).catch((err) => console.error(`settling grant ${this.id} failed:`, err)),
    );
  }
}
