// Bundles each widget entry (js/src/widgets/*.js) into ../cnn_widgets/static/<name>.js as an ES module.
import * as esbuild from "esbuild";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const entryDir = join(here, "src", "widgets");
const entryPoints = readdirSync(entryDir)
  .filter((f) => f.endsWith(".js"))
  .map((f) => join(entryDir, f));

const options = {
  entryPoints,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: false,
  outdir: join(here, "..", "cnn_widgets", "static"),
  logLevel: "info",
};

if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
