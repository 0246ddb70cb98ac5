// Bundles browser/entry.js (js-libp2p for Chromium) into browser/bundle.js with esbuild's API.
import { build } from 'esbuild'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
await build({
  entryPoints: [join(here, 'browser', 'entry.js')],
  outfile: join(here, 'browser', 'bundle.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'chrome120',
  logLevel: 'warning'
})
