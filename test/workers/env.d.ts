// Types of what the Workers test pool injects: the edge's bindings and its main module's exports.
type EdgeEnv = import("../../edge/src/env.js").Env;
type EdgeMainModule = typeof import("../../edge/src/index.js");

declare namespace Cloudflare {
  interface Env extends EdgeEnv {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
  }
  interface GlobalProps {
    mainModule: EdgeMainModule;
  }
}
