"""Test helper: ClientHellos produced by real TLS stacks, never leaving 127.0.0.1.

* `python_hello`: Python's `ssl` through `MemoryBIO`; `do_handshake()` writes
  the ClientHello into the outgoing BIO, no socket at all.
* `capture`: a plain TCP server on 127.0.0.1 that reads what a client sends
  until one complete ClientHello has arrived, then closes; `openssl_hello` and
  `curl_hello` point `openssl s_client` / `curl` at it with the provider name
  given as SNI (`-servername`, `--resolve`), so no other address is touched.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
from collections.abc import Sequence

_TIMEOUT = 10.0


def python_hello(
    server_hostname: str | None = "api.openai.com",
    *,
    alpn: Sequence[str] = (),
    maximum_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> tuple[bytes, ssl.SSLContext]:
    """The ClientHello bytes Python's ssl sends, and the context that sent them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    # The handshake stops waiting for the ServerHello; the ClientHello is in `outgoing`.
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read(), ctx


def _complete(buf: bytes) -> bool:
    """True once `buf` holds a whole handshake message (record lengths trusted: test side)."""
    hs = b""
    pos = 0
    while pos + 5 <= len(buf):
        n = int.from_bytes(buf[pos + 3 : pos + 5], "big")
        hs += buf[pos + 5 : pos + 5 + n]
        pos += 5 + n
    return len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big")


def capture(argv: Sequence[str]) -> bytes:
    """Run a client against a local reader; `{port}` in `argv` is replaced by its port."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(_TIMEOUT)
        port = srv.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        proc = subprocess.Popen(
            [a.replace("{port}", str(port)) for a in argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(_TIMEOUT)
                buf = b""
                while not _complete(buf):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        finally:
            try:
                proc.wait(_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return buf


def openssl_hello(*args: str, servername: str = "api.openai.com") -> bytes:
    return capture(["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                    "-servername", servername, *args])


def curl_hello(*args: str, host: str = "api.openai.com") -> bytes:
    return capture(["curl", "-sk", "--noproxy", "*", "--max-time", "5",
                    "--resolve", f"{host}:{{port}}:127.0.0.1", *args,
                    f"https://{host}:{{port}}/"])
