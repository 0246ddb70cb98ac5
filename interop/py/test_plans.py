"""py-libp2p's own test-plans binary (`interop/transport/ping_test.py --test-plans`, shipped in the
libp2p 0.8.1 wheel), run unchanged but for three things this harness needs:

1. Loopback only. In a container, ping_test listens on every interface and publishes the
   container's address (found with `hostname -I`, or a UDP socket "connected" to 8.8.8.8). Here
   only 127.0.0.1 may be used, so listen addresses are /ip4/127.0.0.1/tcp/0/{ws,wss}, the
   published address is the 127.0.0.1 one, and the container-IP lookup is never made.
2. wss listener certificate: when INTEROP_TLS_CERT and INTEROP_TLS_KEY are set, the listener
   presents that chain (from the harness's test CA) instead of a fresh self-signed one, so that a
   verifying dialer can check it. Unset, ping_test's own self-signed certificate is used.
3. Its `interop` package lives in site-packages; it is imported from there.

Environment and output are ping_test's (the test-plans contract: transport, muxer, security,
is_dialer, ip, redis_addr, test_timeout_seconds; JSON line on stdout from the dialer).
"""
import os
import ssl
import sys

import multiaddr
import trio

from interop.transport import ping_test as pt  # site-packages/interop/transport/ping_test.py


def loopback_listen_addresses(self, port: int = 0):
    proto = "wss" if self.transport == "wss" else "ws"
    if self.transport not in ("ws", "wss"):
        raise ValueError(f"this shim covers ws and wss, not {self.transport}")
    return [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}/{proto}")]


def loopback_publishable_address(self, addresses):
    for addr in self._filter_addresses_by_transport(addresses) or addresses:
        if "/ip4/127.0.0.1/" in str(addr):
            return str(addr)
    raise RuntimeError(f"no 127.0.0.1 address among {[str(a) for a in addresses]}")


def no_container_ip(self):
    return "127.0.0.1"


_own_server_config = pt.PingTest.create_tls_server_config


def server_config_from_env(self):
    cert, key = os.environ.get("INTEROP_TLS_CERT"), os.environ.get("INTEROP_TLS_KEY")
    if self.transport != "wss" or not cert or not key:
        return _own_server_config(self)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    print(f"[shim] wss listener certificate from {cert}", file=sys.stderr)
    return ctx


pt.PingTest.create_listen_addresses = loopback_listen_addresses
pt.PingTest._get_publishable_address = loopback_publishable_address
pt.PingTest.get_container_ip = no_container_ip
pt.PingTest.create_tls_server_config = server_config_from_env

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--test-plans"]
    trio.run(pt.main)
