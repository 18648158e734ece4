// Builds the playground's pages into dist/, which the livegate binary embeds
// (src/transport/playground.rs). Run with `npm run build`; commit dist/ with the
// sources. The output is a pure function of the sources and package-lock.json:
// CI rebuilds it and fails if it differs from what is committed.
//
// Each page is an entry: its source folder under src/ holds main.jsx (the script,
// which imports its CSS) and index.html (with %JS% and %CSS% where the built file
// names go). Pages are served under /playground: dist/index.html at /playground,
// dist/<name>/index.html at /playground/<name>. Scripts and styles go to
// dist/assets/ with a content hash in their names, so they can be cached forever.

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(ROOT, 'dist');
const ASSETS = path.join(DIST, 'assets');

/** The pages: GraphiQL at /playground, the demo app at /playground/demo. */
const PAGES = [
  { name: 'playground', source: 'src/graphiql', page: 'index.html' },
  { name: 'demo', source: 'src/demo', page: 'demo/index.html' },
];

/** Where dist/assets/ is, relative to a page's URL (see the header). */
function assetsFrom(page) {
  const depth = page.split('/').length - 1;
  return depth === 0 ? 'playground/assets/' : '../'.repeat(depth - 1) + 'assets/';
}

await rm(DIST, { recursive: true, force: true });
await mkdir(ASSETS, { recursive: true });

const result = await esbuild.build({
  absWorkingDir: ROOT,
  entryPoints: Object.fromEntries(PAGES.map((p) => [p.name, path.join(p.source, 'main.jsx')])),
  outdir: ASSETS,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  // Fonts and images referenced from CSS become files next to it, never URLs elsewhere.
  loader: { '.woff': 'file', '.woff2': 'file', '.ttf': 'file', '.png': 'file', '.svg': 'file' },
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
});

for (const page of PAGES) {
  const entry = path.join(page.source, 'main.jsx');
  const [js, output] = Object.entries(result.metafile.outputs).find(([, o]) => o.entryPoint === entry) ?? [];
  if (!js || !output.cssBundle) throw new Error(`esbuild produced no script and style for ${entry}`);
  const prefix = assetsFrom(page.page);
  const html = (await readFile(path.join(ROOT, page.source, 'index.html'), 'utf8'))
    .replace('%JS%', prefix + path.basename(js))
    .replace('%CSS%', prefix + path.basename(output.cssBundle));
  const target = path.join(DIST, page.page);
  await mkdir(path.dirname(target), { recursive: true });
  await writeFile(target, html);
}

for (const [file, { bytes }] of Object.entries(result.metafile.outputs)) {
  console.log(`${path.relative(ROOT, path.join(ROOT, file)).padEnd(48)} ${(bytes / 1024).toFixed(0).padStart(6)} KiB`);
}
