"""py-libp2p peer speaking the interop CLI contract (py-libp2p 0.8.1, run from its own venv).

  --listen <ma> (repeatable)  --dial <ma>  --count <n>  --timeout <secs>
  --cert <pem> --key <pem>    TLS server chain and key for /tls/ws and /wss listen addresses
  --ca <pem>                  extra trusted root for wss dials (the system roots stay trusted)

stdout: `listening <ma>/p2p/<id>`, `connected <peer> <ma>`, `ping <peer> <rtt-ms>`; logs on stderr.

Transports: the websocket transport (ws and wss); py-libp2p's TCP transport as well when an address
is plain /tcp (`enable_tcp`), so that the websocket-only cells run exactly as before.
"""
import argparse
import logging
import secrets
import signal
import ssl
import sys
import time

import multiaddr
import trio

from libp2p import new_host
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.host.ping import handle_ping
from libp2p.peer.peerinfo import info_from_p2p_addr

PING_LENGTH = 32


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def describe(err: BaseException, depth: int = 0) -> str:
    """The exception and its causes (py-libp2p wraps the real dial errors)."""
    parts, seen = [], set()
    while err is not None and id(err) not in seen and depth < 4:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        inner = getattr(err, "exceptions", None) or getattr(err, "errors", None) or []
        for sub in inner if isinstance(inner, (list, tuple)) else []:
            parts.append("[" + describe(sub, depth + 1) + "]")
        err = err.__cause__ or err.__context__
    return " <- ".join(parts)


async def read_exactly(stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"stream closed after {len(buf)} of {n} ping bytes")
        buf += chunk
    return buf


async def dial(host, addr: str, count: int) -> None:
    if "/tls/ws" in addr:
        # py-libp2p 0.8.1 rejects `/tls/ws` followed by `/p2p/<id>` (its multiaddr check wants
        # `ws` last) and the swarm always appends `/p2p/<id>`; `/wss` is the same thing.
        addr = addr.replace("/tls/ws", "/wss")
        log(f"note: dialing {addr} (py-libp2p cannot dial /tls/ws/p2p/...)")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    remote = str(info.peer_id)
    log(f"dialing {addr}")
    await host.connect(info)  # the noise handshake authenticates `remote`
    out(f"connected {remote} {addr}")
    stream = await host.new_stream(info.peer_id, [PING_PROTOCOL_ID])
    for _ in range(count):
        payload = secrets.token_bytes(PING_LENGTH)
        start = time.perf_counter()
        await stream.write(payload)
        echo = await read_exactly(stream, PING_LENGTH)
        rtt = (time.perf_counter() - start) * 1000.0
        if echo != payload:
            raise ValueError("ping echo does not match the payload")
        out(f"ping {remote} {rtt:.3f}")
    try:
        await stream.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


def is_plain_tcp(addr: str) -> bool:
    parts = addr.split("/p2p/")[0].split("/")
    return "tcp" in parts and not {"ws", "wss", "tls", "quic", "quic-v1"} & set(parts)


async def run(args) -> int:
    listen = [multiaddr.Multiaddr(a) for a in args.listen]
    server_ctx = None
    if args.cert:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(args.cert, args.key)
    client_ctx = ssl.create_default_context()
    if args.ca:
        client_ctx.load_verify_locations(cafile=args.ca)

    secure = any("tls" in a or "wss" in a for a in args.listen) or (
        args.dial is not None and ("/tls/" in args.dial or "/wss" in args.dial)
    )
    host = new_host(
        listen_addrs=listen or None,
        enable_tcp=any(is_plain_tcp(a) for a in [*args.listen, *([args.dial] if args.dial else [])]),
        enable_websocket=True,
        tls_server_config=server_ctx,
        tls_client_config=client_ctx if secure else None,
    )
    peer_id = str(host.get_id())
    log(f"local peer id {peer_id}")

    if args.dial is None:
        host.set_stream_handler(PING_PROTOCOL_ID, handle_ping)
        async with host.run(listen_addrs=listen):
            for addr in host.get_addrs():
                text = str(addr)
                out(f"listening {text}" if "/p2p/" in text else f"listening {text}/p2p/{peer_id}")
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
        return 0

    async with host.run(listen_addrs=[]):
        try:
            with trio.fail_after(args.timeout):
                await dial(host, args.dial, args.count)
        except trio.TooSlowError:
            log(f"error: timed out after {args.timeout} s")
            return 1
        except Exception as err:  # noqa: BLE001 - report any failure on the contract's error line
            log(f"error: {describe(err)}")
            return 1
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--dial")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args()
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
