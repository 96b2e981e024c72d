#!/usr/bin/env python3
"""Peer for the benchmark: an asyncio server on the ``websockets`` library.

WebSocket clients connect on ``--port`` (any path), receive ``connected``, send
``{"type":"subscribe","channels":[...]}`` and get ``subscribed``, like local_bridge's ``/ws``.
``websockets`` only speaks HTTP GET, so publishing is a tiny HTTP/1.1 keep-alive listener in the
same event loop on ``--http-port``: ``POST /api/websocket/broadcast`` with local_bridge's body
builds the same envelope once and hands it to ``websockets.broadcast()`` for every subscriber of
the channel (no backpressure: that is what ``broadcast()`` does). ``GET /health`` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dumps, envelope, parse_publish, reply  # noqa: E402
from websockets.asyncio.server import broadcast, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

subscribers: dict[str, set] = {}
seq = 0


async def ws_handler(ws) -> None:
    joined: set[str] = set()
    try:
        await ws.send(reply("connected", client_id=str(ws.id), seq=seq))
        async for message in ws:
            try:
                doc = json.loads(message)
            except ValueError:
                continue
            if doc.get("type") == "subscribe":
                for channel in doc.get("channels") or ():
                    subscribers.setdefault(channel, set()).add(ws)
                    joined.add(channel)
                await ws.send(reply("subscribed", channels=sorted(joined), seq=seq))
            elif doc.get("type") == "ping":
                await ws.send(reply("pong"))
    except ConnectionClosed:
        pass
    finally:
        for channel in joined:
            subscribers.get(channel, set()).discard(ws)


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode() + body


async def http_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global seq
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            path = rest.partition(" ")[0]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            keep_alive = headers.get("connection", "").lower() != "close"
            if method == "POST" and path == "/api/websocket/broadcast":
                try:
                    type_, channel, data = parse_publish(body)
                except (ValueError, TypeError) as exc:
                    out = _response(
                        "400 Bad Request", dumps({"error": str(exc)}).encode(), keep_alive
                    )
                else:
                    seq += 1
                    text = dumps(envelope(type_, channel, seq, data))
                    targets = (
                        subscribers.get(channel, ())
                        if channel
                        else {ws for group in subscribers.values() for ws in group}
                    )
                    broadcast(targets, text)
                    out = _response(
                        "202 Accepted",
                        dumps({"seq": seq, "recipients": len(targets)}).encode(),
                        keep_alive,
                    )
            elif method == "GET" and path == "/health":
                out = _response("200 OK", b'{"status":"ok"}', keep_alive)
            else:
                out = _response("404 Not Found", b'{"error":"not found"}', keep_alive)
            writer.write(out)
            await writer.drain()
            if not keep_alive:
                return
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(host: str, port: int, http_port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    http = await asyncio.start_server(http_handler, host, http_port, backlog=2048)
    async with serve(ws_handler, host, port, backlog=2048, compression=None, max_size=65536):
        async with http:
            await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    asyncio.run(main(args.host, args.port, args.http_port))
