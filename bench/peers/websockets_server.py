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

import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    dumps,
    envelope,
    http_publish_handler,
    loopback_args,
    recipients_of,
    reply,
)
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


def publish(type_: str, channel: str | None, data: dict) -> tuple[int, int]:
    """The envelope built once, handed to ``websockets.broadcast()`` for every subscriber."""
    global seq
    seq += 1
    targets = recipients_of(subscribers, channel)
    broadcast(targets, dumps(envelope(type_, channel, seq, data)))
    return seq, len(targets)


async def main(host: str, port: int, http_port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    http = await asyncio.start_server(http_publish_handler(publish), host, http_port, backlog=2048)
    async with serve(ws_handler, host, port, backlog=2048, compression=None, max_size=65536):
        async with http:
            await stop


if __name__ == "__main__":
    args = loopback_args(__doc__.splitlines()[0])
    asyncio.run(main(args.host, args.port, args.http_port))
