/**
 * `npm run infra:render`: validates every object against its Kubernetes schema
 * and writes the manifests to infra/k8s/rendered/ (the directory is replaced,
 * so a model removed from the settings loses its file). CI renders again and
 * fails when the committed copy differs.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { renderManifests } from "./manifests.js";
import { settings } from "./settings.js";

const out = fileURLToPath(new URL("./rendered", import.meta.url));
const files = renderManifests(settings);
for (const file of files) for (const object of file.objects) object.validate();
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const file of files) writeFileSync(join(out, file.name), file.text);
const count = files.reduce((n, f) => n + f.objects.length, 0);
console.log(`rendered ${count} objects into ${files.length} files in ${out}`);
