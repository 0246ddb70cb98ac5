// Bundled by esbuild into browser/bundle.js and loaded by browser/index.html.
// Exposes window.interopDial(addr, count, timeoutMs) -> { ok, lines, error }.
import { createNode, dialAndPing } from '../common.js'

window.interopDial = async (addr, count, timeoutMs) => {
  const lines = []
  const out = (line) => { lines.push(line); console.log(line) }
  let node
  try {
    node = await createNode()
    await node.start()
    lines.push(`# local peer id ${node.peerId.toString()}`)
    await dialAndPing(node, addr, { count, timeoutMs, out })
    return { ok: true, lines }
  } catch (err) {
    // A failed WebSocket rejects with a bare Event; the reason is on the browser console.
    const error = (typeof Event !== 'undefined' && err instanceof Event)
      ? `WebSocket '${err.type}' event (the reason is in the [page] console lines)`
      : String(err?.stack ?? err?.message ?? err)
    return { ok: false, lines, error }
  } finally {
    if (node != null) await Promise.race([node.stop(), new Promise(resolve => setTimeout(resolve, 2000))])
  }
}
window.interopReady = true
