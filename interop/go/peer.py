"""go-libp2p peer speaking the interop CLI contract.

go-libp2p v0.24.2 reached through the PyPI wheel `libp2p-go==0.1.4` (a cgo build of
go-libp2p with a ctypes wrapper); run it with the interpreter of its own venv.

  --listen <ma> (repeatable)  --dial <ma>  --count <n>  --timeout <secs>
  --ca <pem>   extra trusted root for wss dials (handled by ../bin/go-peer through SSL_CERT_FILE)
  --cert/--key accepted but unusable: the wrapper exposes no websocket TLS config, so this
               peer cannot listen on /tls/ws or /wss.

stdout: `listening <ma>/p2p/<id>`, `connected <peer> <ma>`, `ping <peer> <rtt-ms>`; logs on stderr.

Transports: websocket only (`TransportWebsocket()`, /ws and dialing /tls/ws), unless an address
is plain /tcp: then `DefaultTransports()` (go-libp2p v0.24.2's TCP, websocket, QUIC and
WebTransport), since the wheel has no TCP-only option.

The wheel's own ping helper fails, so pings are done by hand on /ipfs/ping/1.0.0: write 32
random bytes, read the 32-byte echo (the go host's ping service answers as a listener).
"""
import argparse
import asyncio
import os
import signal
import sys
import time

import libp2p
from libp2p.peer import addr_info_from_p2p_addr

PING = "/ipfs/ping/1.0.0"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def is_plain_tcp(addr: str) -> bool:
    parts = addr.split("/p2p/")[0].split("/")
    return "tcp" in parts and not {"ws", "wss", "tls", "quic", "quic-v1"} & set(parts)


def make_host(listen: list[str], dial: str | None) -> libp2p.Host:
    plain_tcp = any(is_plain_tcp(a) for a in [*listen, *([dial] if dial else [])])
    options = [
        # DefaultTransports includes the websocket transport; giving both would register it twice.
        libp2p.DefaultTransports() if plain_tcp else libp2p.TransportWebsocket(),
        libp2p.SecurityNoise(),
        libp2p.DefaultMuxers(),  # yamux/1.0.0 first, then mplex
        libp2p.Ping(True),  # answers /ipfs/ping/1.0.0
        libp2p.DisableRelay(),
    ]
    options.append(libp2p.ListenAddrStrings(*listen) if listen else libp2p.NoListenAddrs())
    return libp2p.Host(*options)


async def read_exactly(stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got, data = await stream.read_bytes(n - len(buf))
        if got <= 0 or not data:
            raise EOFError(f"stream closed after {len(buf)} of {n} ping bytes")
        buf += data[:got]
    return buf


async def dial(host: libp2p.Host, addr: str, count: int) -> None:
    info = addr_info_from_p2p_addr(addr)
    remote = info.id.string
    log(f"dialing {addr}")
    await host.connect(info)  # the noise handshake authenticates `remote`
    out(f"connected {remote} {addr}")
    stream = await host.new_stream(info.id, PING)
    for _ in range(count):
        payload = os.urandom(32)
        start = time.perf_counter()
        await stream.write(payload)
        echo = await read_exactly(stream, 32)
        rtt = (time.perf_counter() - start) * 1000.0
        if echo != payload:
            raise ValueError("ping echo does not match the payload")
        out(f"ping {remote} {rtt:.3f}")
    await stream.close()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--dial")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args()

    host = make_host(args.listen, args.dial)
    peer_id = host.id.string
    log(f"local peer id {peer_id}")

    if args.dial is None:
        if args.cert:
            log("note: --cert/--key ignored: libp2p-go 0.1.4 has no websocket TLS option")
        for addr in host.network.listen_addresses():
            out(f"listening {addr}/p2p/{peer_id}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0

    try:
        await asyncio.wait_for(dial(host, args.dial, args.count), args.timeout)
    except asyncio.TimeoutError:
        log(f"error: timed out after {args.timeout} s")
        return 1
    except Exception as err:  # noqa: BLE001 - report any failure on the contract's error line
        log(f"error: {type(err).__name__}: {err}")
        return 1
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    # The cgo runtime keeps threads alive; leave without waiting for them.
    os._exit(code)
