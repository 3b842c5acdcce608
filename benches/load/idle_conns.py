#!/usr/bin/env python3
"""Open N idle TLS keep-alive connections to a proxy and hold them, for compare.sh.

Each connection makes a full TLS handshake (certificate not verified: the bench certificate is
self-signed), sends one HTTP/1.1 keep-alive request, reads the whole response and then stays
open without sending anything, which is what an idle browser connection looks like to the proxy.
When all N are open the script prints `READY open=N` (compare.sh then reads the proxy's RSS) and
waits until it gets SIGTERM or --hold seconds pass. Every step is bounded in
time so that a stuck proxy cannot hang the benchmark.

With --h2 each connection negotiates HTTP/2 instead (ALPN h2), sends its request as one stream
and then stays open, answering the server's PINGs and SETTINGS as a browser would. The request's
fields are HPACK literals with incremental indexing, not Huffman-coded: the server keeps them in
its dynamic table, the case where a decoder could keep a slice of its read buffer alive.

Usage: idle_conns.py --port 18443 [--host 127.0.0.1] [--name NAME] [--count 10000] [--path /64] [--h2]
                     [--parallel 100] [--open-timeout 120] [--hold 300]
"""

import argparse
import asyncio
import resource
import signal
import ssl
import struct
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", help="server name sent as SNI and Host (default: --host)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--path", default="/64")
    p.add_argument("--expect-status", type=int, default=200)
    p.add_argument("--h2", action="store_true", help="HTTP/2 (ALPN h2) instead of HTTP/1.1")
    # Opening thousands at once would overflow the listen backlogs (Portcullis: 128) and measure
    # SYN retransmits; a bounded number of connections in flight keeps opening fast and clean.
    p.add_argument("--parallel", type=int, default=100)
    p.add_argument("--open-timeout", type=float, default=120.0,
                   help="seconds allowed for opening all connections")
    p.add_argument("--hold", type=float, default=300.0,
                   help="seconds to keep the connections open at most")
    return p.parse_args()


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if want < needed:
            sys.exit(f"idle_conns: need {needed} file descriptors, hard limit is {hard}")


async def read_response(reader):
    """Reads one HTTP/1.1 response with a Content-Length body; returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "connection" and "close" in value.lower():
            raise RuntimeError("server asked to close the connection")
    await reader.readexactly(length)
    return status


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING, H2_GOAWAY = 0, 1, 4, 6, 7
H2_END_STREAM, H2_ACK = 0x1, 0x1


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(index, value):
    """A literal with incremental indexing and an indexed name, raw (not Huffman)."""
    value = value.encode()
    assert index < 63 and len(value) < 127
    return bytes([0x40 | index, len(value)]) + value


async def h2_read_frame(reader):
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, await reader.readexactly(length)


async def h2_request(args, reader, writer):
    """Sends one GET as stream 1 and reads until that stream ends; returns its status."""
    block = (b"\x82\x87" + hpack_literal(4, args.path) + hpack_literal(1, args.name)
             + hpack_literal(58, "idle_conns.py"))
    writer.write(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0)
                 + h2_frame(H2_HEADERS, 0x4 | H2_END_STREAM, 1, block))
    await writer.drain()
    status = None
    while True:
        kind, flags, stream, payload = await h2_read_frame(reader)
        h2_answer(writer, kind, flags, payload)
        if stream != 1 or kind not in (H2_HEADERS, H2_DATA):
            continue
        if kind == H2_HEADERS and status is None:
            # :status 200 is the static table's entry 8; any other status is reported as 0.
            status = 200 if payload[:1] == b"\x88" else 0
        if flags & H2_END_STREAM:
            return status


def h2_answer(writer, kind, flags, payload):
    if kind == H2_SETTINGS and not flags & H2_ACK:
        writer.write(h2_frame(H2_SETTINGS, H2_ACK, 0))
    elif kind == H2_PING and not flags & H2_ACK:
        writer.write(h2_frame(H2_PING, H2_ACK, 0, payload))
    elif kind == H2_GOAWAY:
        raise RuntimeError("server sent GOAWAY")


async def h2_hold(reader, writer):
    """Keeps answering the server while the connection is held; returns at EOF."""
    try:
        while True:
            kind, flags, _, payload = await h2_read_frame(reader)
            h2_answer(writer, kind, flags, payload)
    except (asyncio.IncompleteReadError, ConnectionError, RuntimeError):
        return


async def open_one(args, ctx, gate, conns, statuses):
    async with gate:
        reader, writer = await asyncio.open_connection(
            args.host, args.port, ssl=ctx, server_hostname=args.name)
        if args.h2:
            status = await h2_request(args, reader, writer)
            statuses[status] = statuses.get(status, 0) + 1
            conns.append((reader, writer, asyncio.create_task(h2_hold(reader, writer))))
            return
        request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.name}\r\n"
                   f"Connection: keep-alive\r\n\r\n").encode()
        writer.write(request)
        await writer.drain()
        status = await read_response(reader)
        statuses[status] = statuses.get(status, 0) + 1
        conns.append((reader, writer, None))


async def main():
    args = parse_args()
    args.name = args.name or args.host
    raise_fd_limit(args.count + 100)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2" if args.h2 else "http/1.1"])

    gate = asyncio.Semaphore(args.parallel)
    conns, statuses = [], {}
    tasks = [asyncio.create_task(open_one(args, ctx, gate, conns, statuses))
             for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.open_timeout)
    for task in pending:
        task.cancel()
    errors = {}
    for task in done:
        exc = task.exception()
        if exc is not None:
            key = f"{type(exc).__name__}: {exc}"[:120]
            errors[key] = errors.get(key, 0) + 1
    if pending or errors or statuses.get(args.expect_status, 0) != args.count:
        print(f"FAILED open={len(conns)} of {args.count} timed_out={len(pending)} "
              f"statuses={statuses} errors={errors}", flush=True)
        sys.exit(1)
    print(f"READY open={len(conns)} statuses={statuses}", flush=True)

    # Hold until SIGTERM or --hold passes; a connection the proxy closes in the
    # meantime is counted so compare.sh can tell.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.hold)
    except asyncio.TimeoutError:
        pass
    closed = sum(1 for reader, _, hold in conns
                 if reader.at_eof() or (hold is not None and hold.done()))
    print(f"DONE closed_by_server={closed}", flush=True)
    for _, writer, hold in conns:
        if hold is not None:
            hold.cancel()
        writer.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
