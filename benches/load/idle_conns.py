#!/usr/bin/env python3
"""Open N idle TLS keep-alive connections to a proxy and hold them, for compare.sh.

Each connection makes a full TLS handshake (certificate not verified: the bench certificate is
self-signed), sends one HTTP/1.1 keep-alive request, reads the whole response and then stays
open without sending anything, which is what an idle browser connection looks like to the proxy.
When all N are open the script prints `READY open=N` (compare.sh then reads the proxy's RSS) and
waits until it gets SIGTERM or --hold seconds pass. Every step is bounded in
time so that a stuck proxy cannot hang the benchmark.

Usage: idle_conns.py --port 18443 [--host 127.0.0.1] [--count 10000] [--path /64]
                     [--parallel 100] [--open-timeout 120] [--hold 300]
"""

import argparse
import asyncio
import resource
import signal
import ssl
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--path", default="/64")
    p.add_argument("--expect-status", type=int, default=200)
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


async def open_one(args, ctx, gate, conns, statuses):
    async with gate:
        reader, writer = await asyncio.open_connection(
            args.host, args.port, ssl=ctx, server_hostname=args.host)
        request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
                   f"Connection: keep-alive\r\n\r\n").encode()
        writer.write(request)
        await writer.drain()
        status = await read_response(reader)
        statuses[status] = statuses.get(status, 0) + 1
        conns.append((reader, writer))


async def main():
    args = parse_args()
    raise_fd_limit(args.count + 100)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])

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
    closed = sum(1 for reader, _ in conns if reader.at_eof())
    print(f"DONE closed_by_server={closed}", flush=True)
    for _, writer in conns:
        writer.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())
