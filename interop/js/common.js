// Shared by the Node peer (peer.mjs) and the browser page (browser/entry.js):
// a js-libp2p 3.x node with WebSockets (+ the caller's extra transports: the Node peer adds
// @libp2p/tcp, which a browser bundle cannot carry) + Noise + Yamux + ping + identify,
// and the "dial, then ping N times" routine of the interop CLI contract.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

export async function createNode ({ listen = [], https, transports = [], dns } = {}) {
  return createLibp2p({
    ...(dns != null ? { dns } : {}),
    addresses: { listen },
    transports: [webSockets(https != null ? { https } : {}), ...transports],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      ping: ping(),
      identify: identify()
    },
    // The default gater refuses loopback/private and (in browsers) insecure ws
    // addresses; every address in this matrix is loopback.
    connectionGater: {
      denyDialMultiaddr: async () => false
    }
  })
}

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// Dial `addr`, print `connected <peer> <addr>`, then `count` lines of
// `ping <peer> <rtt-ms>`. `out(line)` writes one stdout line. Throws on failure.
export async function dialAndPing (node, addr, { count = 1, timeoutMs = 10000, out }) {
  const deadline = Date.now() + timeoutMs
  const left = () => Math.max(1, deadline - Date.now())
  const ma = multiaddr(addr)
  const conn = await withTimeout(node.dial(ma, { signal: AbortSignal.timeout(left()) }), left(), `dial ${addr}`)
  const expected = ma.getComponents().find(c => c.name === 'p2p')?.value
  const remote = conn.remotePeer.toString()
  if (expected != null && expected !== remote) {
    throw new Error(`dialed ${expected} but the remote authenticated as ${remote}`)
  }
  out(`connected ${remote} ${conn.remoteAddr.toString()}`)
  for (let i = 0; i < count; i++) {
    const rtt = await withTimeout(
      node.services.ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(left()) }),
      left(), `ping ${i + 1}/${count}`)
    out(`ping ${remote} ${Number(rtt).toFixed(3)}`)
  }
  return remote
}
