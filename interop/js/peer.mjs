// js-libp2p peer speaking the interop CLI contract (run with Node >= 22; see ../peers/js):
// WebSockets (/ws, /tls/ws) and plain TCP (@libp2p/tcp: /tcp) + Noise + Yamux.
//   --listen <ma> (repeatable)  --dial <ma>  --count <n>  --timeout <secs>
//   --cert <pem> --key <pem>    (TLS server chain/key for /tls/ws listen addresses)
//   --ca <pem> is handled by the wrapper through NODE_EXTRA_CA_CERTS.
//   --local-address <ip>        (dials connect from this local address: /ws, /tls/ws and /tcp)
//   --dns-server <ip:port>      (the name server for /dnsaddr and /dns* names, instead of the system's)
// stdout: `listening <ma>/p2p/<id>`, `connected <peer> <ma>`, `ping <peer> <rtt-ms>`; logs on stderr,
// among them `local peer id <id>` and, per WebSocket dialed, `websocket local address /ip4/<ip>/tcp/<port>`.
import diagnostics from 'node:diagnostics_channel'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { Resolver } from 'node:dns/promises'
import { tcp } from '@libp2p/tcp'
import { dns as dnsClient, RecordType } from '@multiformats/dns'
import { createNode, dialAndPing } from './common.js'

function parseArgs (argv) {
  const args = { listen: [], count: 1, timeout: 10 }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const value = argv[i + 1]
    if (value === undefined) throw new Error(`missing value for ${flag}`)
    switch (flag) {
      case '--listen': args.listen.push(value); break
      case '--dial': args.dial = value; break
      case '--count': args.count = Number(value); break
      case '--timeout': args.timeout = Number(value); break
      case '--cert': args.cert = value; break
      case '--key': args.key = value; break
      case '--ca': args.ca = value; break
      case '--dns-server': args.dnsServer = value; break
      case '--local-address':
        if (isIP(value) === 0) throw new Error(`--local-address ${value}: not an IP address`)
        args.localAddress = value
        break
      default: throw new Error(`unknown argument ${flag}`)
    }
    i++
  }
  return args
}

const out = (line) => process.stdout.write(line + '\n')

// @libp2p/websockets 10 dials with Node's own WebSocket (undici) as `new WebSocket(uri)`, which
// takes no socket options and connects through undici's global dispatcher (the object under
// Symbol.for('undici.globalDispatcher.1'), which `setGlobalDispatcher` of the undici package sets).
// Replace it with an Agent of Node's own undici (the default one's class) whose connections bind
// `localAddress` (undici's Client option, given to net/tls.connect).
function bindWebSocketDials (localAddress) {
  void globalThis.WebSocket // Node loads undici, which installs the default dispatcher, on first use
  const key = Symbol.for('undici.globalDispatcher.1')
  const Agent = globalThis[key]?.constructor
  if (typeof Agent !== 'function') throw new Error('--local-address: this Node has no undici global dispatcher')
  globalThis[key] = new Agent({ localAddress })
}

// undici reports each WebSocket it opened, with its socket's local address.
diagnostics.subscribe('undici:websocket:open', ({ address }) => {
  const family = address?.family === 'IPv6' ? 'ip6' : 'ip4'
  console.error(`websocket local address /${family}/${address?.address}/tcp/${address?.port}`)
})

// A DNS client (@multiformats/dns) that asks one name server, `ip:port`, with Node's resolver
// (what @multiformats/dns does on Node, but on that server instead of the system's).
function dnsOn (server) {
  const answers = async (resolver, fqdn, type) => {
    try {
      if (type === RecordType.TXT) return (await resolver.resolveTxt(fqdn)).map(chunks => chunks.join(''))
      if (type === RecordType.A) return await resolver.resolve4(fqdn)
      if (type === RecordType.AAAA) return await resolver.resolve6(fqdn)
      return []
    } catch (err) {
      if (err.code === 'ENODATA' || err.code === 'ENOTFOUND') return []
      throw err
    }
  }
  const resolve = async (fqdn, options = {}) => {
    const resolver = new Resolver({ timeout: 2000, tries: 1 })
    resolver.setServers([server])
    const types = [].concat(options.types ?? [RecordType.A])
    const Answer = []
    for (const type of types) {
      for (const data of await answers(resolver, fqdn, type)) Answer.push({ name: fqdn, type, TTL: 60, data })
    }
    return { Status: 0, TC: false, RD: true, RA: true, AD: false, CD: false, Question: types.map(type => ({ name: fqdn, type })), Answer }
  }
  return dnsClient({ resolvers: { '.': resolve } })
}

// WebSocket failures surface as ErrorEvent objects; show their message.
const fmt = (err) => err?.stack ?? err?.error?.stack ?? err?.message ?? String(err)

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const https = args.cert != null ? { cert: readFileSync(args.cert), key: readFileSync(args.key) } : undefined
  if (args.localAddress != null) bindWebSocketDials(args.localAddress)
  const tcpInit = args.localAddress != null ? { dialOpts: { localAddress: args.localAddress } } : {}
  const dns = args.dnsServer != null ? dnsOn(args.dnsServer) : undefined
  const node = await createNode({ listen: args.listen, https, transports: [tcp(tcpInit)], dns })
  await node.start()
  console.error(`local peer id ${node.peerId.toString()}`)

  if (args.dial == null) {
    node.addEventListener('connection:open', (evt) => {
      out(`connected ${evt.detail.remotePeer.toString()} ${evt.detail.remoteAddr.toString()}`)
    })
    for (const ma of node.getMultiaddrs()) out(`listening ${ma.toString()}`)
    const stop = async () => { await node.stop().catch(() => {}); process.exit(0) }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
    return
  }

  const hardStop = setTimeout(() => {
    console.error(`error: timed out after ${args.timeout} s`)
    process.exit(1)
  }, args.timeout * 1000 + 2000)
  try {
    await dialAndPing(node, args.dial, { count: args.count, timeoutMs: args.timeout * 1000, out })
    clearTimeout(hardStop)
    await Promise.race([node.stop(), new Promise(resolve => setTimeout(resolve, 2000))])
    process.exit(0)
  } catch (err) {
    console.error(`error: ${fmt(err)}`)
    process.exit(1)
  }
}

main().catch((err) => {
  console.error(`error: ${fmt(err)}`)
  process.exit(2)
})
