// Build the dashboard: bundle webui/src/main.js → bridge/static/app.js (IIFE, minified, with a
// sourcemap) and copy index.html and app.css. Usage: node webui/build.mjs [--dev]
// Everything the page needs ends up in bridge/static/ (inside the Python package, so wheels
// carry it): no CDN, no web fonts.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const out = join(here, "..", "bridge", "static");
const dev = process.argv.includes("--dev");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(src, "main.js")],
  outfile: join(out, "app.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  minify: !dev,
  sourcemap: true,
  legalComments: "linked",
  define: { "process.env.NODE_ENV": dev ? '"development"' : '"production"' },
  logLevel: "warning",
  metafile: true,
});
for (const file of ["index.html", "app.css"]) await copyFile(join(src, file), join(out, file));
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`webui: built bridge/static/ (${(bytes / 1e6).toFixed(2)} MB with sourcemap)`);
