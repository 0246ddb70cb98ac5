// Chromium peer speaking the dial half of the interop CLI contract (a browser cannot listen):
//   --dial <ma> --count <n> --timeout <secs> [--ca <pem>] [--host-rule <name>]... [--require-verified]
// Serves browser/ (index.html + the esbuild bundle of js-libp2p) on 127.0.0.1, starts Debian's
// headless Chromium through playwright-core with a fresh profile, and runs window.interopDial.
// --ca: the test CA is put in an NSS database under a throwaway HOME, so that Chromium
// verifies the wss certificate for real (certutil from libnss3-tools). Without certutil it
// falls back to --ignore-certificate-errors and says so on stderr, unless --require-verified
// is given: then it fails with `error: certutil not found` (the tests that prove a certificate
// verifies in a browser give it, so the fallback can never make them pass).
// --host-rule <name> (repeatable): Chromium resolves <name> to 127.0.0.1
// (--host-resolver-rules="MAP <name> 127.0.0.1", joined with commas), for names that are in no
// name server and not in /etc/hosts.
// stdout: `connected <peer> <ma>`, `ping <peer> <rtt-ms>`; logs on stderr; exit 0 on success.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join, extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
const log = (line) => process.stderr.write(line + '\n')

function parseArgs (argv) {
  const args = { count: 1, timeout: 10, hostRules: [], requireVerified: false }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    if (flag === '--require-verified') { args.requireVerified = true; continue }
    const value = argv[++i]
    if (value === undefined) throw new Error(`missing value for ${flag}`)
    if (flag === '--dial') args.dial = value
    else if (flag === '--count') args.count = Number(value)
    else if (flag === '--timeout') args.timeout = Number(value)
    else if (flag === '--ca') args.ca = value
    else if (flag === '--host-rule') {
      // One name per flag: a comma or space would smuggle another rule into the list.
      if (!/^[A-Za-z0-9*._-]+$/.test(value)) throw new Error(`--host-rule ${value}: not a host name`)
      args.hostRules.push(value)
    } else if (flag === '--listen') throw new Error('a browser cannot listen')
    else throw new Error(`unknown argument ${flag}`)
  }
  if (args.dial == null) throw new Error('--dial is required')
  return args
}

function serve () {
  const types = { '.html': 'text/html', '.js': 'text/javascript' }
  const server = http.createServer((req, res) => {
    const name = req.url === '/' ? 'index.html' : req.url.slice(1).split('?')[0]
    if (!['index.html', 'bundle.js'].includes(name)) { res.writeHead(name === 'favicon.ico' ? 204 : 404); res.end(); return }
    res.writeHead(200, { 'content-type': types[extname(name)] ?? 'application/octet-stream' })
    res.end(readFileSync(join(here, name)))
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

function haveCertutil () {
  try { execFileSync('certutil', ['-H'], { stdio: 'ignore' }) } catch (err) { return err.code !== 'ENOENT' }
  return true
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const certutil = args.ca != null && haveCertutil()
  if (args.ca != null && !certutil && args.requireVerified) throw new Error('certutil not found')
  const scratch = mkdtempSync(join(tmpdir(), 'interop-chromium-'))
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
  const env = { ...process.env, HOME: join(scratch, 'home') }
  mkdirSync(join(env.HOME, '.pki', 'nssdb'), { recursive: true })
  if (certutil) {
    const db = `sql:${join(env.HOME, '.pki', 'nssdb')}`
    execFileSync('certutil', ['-N', '-d', db, '--empty-password'])
    execFileSync('certutil', ['-A', '-d', db, '-t', 'C,,', '-n', 'libp2p-ws interop test CA', '-i', args.ca])
    log('test CA installed in a throwaway NSS database')
  } else if (args.ca != null) {
    flags.push('--ignore-certificate-errors')
    log('certutil not found: using --ignore-certificate-errors')
  }

  if (args.hostRules.length > 0) {
    const rules = args.hostRules.map((name) => `MAP ${name} 127.0.0.1`).join(',')
    flags.push(`--host-resolver-rules=${rules}`)
    log(`host resolver rules: ${rules}`)
  }

  const server = await serve()
  const url = `http://127.0.0.1:${server.address().port}/`
  let context
  const hardStop = setTimeout(() => { log(`error: timed out after ${args.timeout + 20} s`); process.exit(1) },
    (args.timeout + 20) * 1000)
  try {
    // A fresh profile (user-data-dir) in the scratch folder.
    context = await chromium.launchPersistentContext(join(scratch, 'profile'), {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      headless: true,
      args: flags,
      env,
      timeout: 20000
    })
    log(`chromium ${context.browser()?.version() ?? ''}`)
    const page = context.pages()[0] ?? await context.newPage()
    page.on('console', (msg) => log(`[page] ${msg.text()}`))
    page.on('pageerror', (err) => log(`[page error] ${err}`))
    await page.goto(url, { timeout: 10000 })
    await page.waitForFunction(() => window.interopReady === true, null, { timeout: 10000 })
    const result = await page.evaluate(([addr, count, ms]) => window.interopDial(addr, count, ms),
      [args.dial, args.count, args.timeout * 1000])
    for (const line of result.lines) {
      if (line.startsWith('#')) log(line.slice(2)); else process.stdout.write(line + '\n')
    }
    if (!result.ok) throw new Error(result.error)
    return 0
  } finally {
    clearTimeout(hardStop)
    if (context != null) await Promise.race([context.close(), new Promise(resolve => setTimeout(resolve, 5000))])
    server.close()
    rmSync(scratch, { recursive: true, force: true })
  }
}

main().then((code) => process.exit(code), (err) => {
  log(`error: ${err?.message ?? err}`)
  process.exit(1)
})
