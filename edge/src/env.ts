/** Bindings and variables the edge Worker receives (see wrangler.jsonc and the README). */
export interface Env {
  /** Base URL of the GPU service (Connect protocol), e.g. http://127.0.0.1:50651 */
  GPU_SERVICE_URL: string;
}
