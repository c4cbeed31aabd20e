/**
 * `npm run -w @twigserve/edge deploy:production` runs this first: it exits
 * non-zero, naming each problem, while the production configuration is
 * malformed or still holds the example values (the D1 id, the domain).
 */
import { placeholderProblems, productionConfig, structuralProblems } from "./production-config.js";

const config = productionConfig();
const problems = [...structuralProblems(config), ...placeholderProblems(config)];
if (problems.length > 0) {
  console.error(
    `edge/wrangler.jsonc env.production is not ready to deploy:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
  );
  process.exit(1);
}
console.log("edge/wrangler.jsonc env.production: ready to deploy");
