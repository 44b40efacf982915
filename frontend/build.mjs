// Bundles src/ into ONE file, ../spine_viewer/static/workstation.js (inlined by Python as the
// component's js=), and writes ../spine_viewer/static/SOURCES.sha256, the hash of the sources
// (build.mjs, package.json, package-lock.json, tsconfig.json, src/**) that
// tests/spine_viewer/test_bundle_fresh.py recomputes.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "spine_viewer", "static");

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** sha256 over "relative/path\0sha256(content)\n" lines, paths sorted (POSIX separators). */
export function sourcesHash() {
  const files = ["build.mjs", "package.json", "package-lock.json", "tsconfig.json"]
    .map((f) => join(here, f))
    .concat(walk(join(here, "src")));
  const lines = files
    .map((f) => [relative(here, f).split(sep).join("/"), f])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([rel, f]) => `${rel}\0${createHash("sha256").update(readFileSync(f)).digest("hex")}\n`);
  return createHash("sha256").update(lines.join("")).digest("hex");
}

mkdirSync(outDir, { recursive: true });
await build({
  entryPoints: [join(here, "src", "index.ts")],
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  legalComments: "none",
  loader: { ".css": "text" },
  outfile: join(outDir, "workstation.js"),
  logLevel: "warning",
});
writeFileSync(join(outDir, "SOURCES.sha256"),
  `${sourcesHash()}  frontend: build.mjs package.json package-lock.json tsconfig.json src/**\n`);
console.log("wrote spine_viewer/static/workstation.js and SOURCES.sha256");
