#!/usr/bin/env python3
"""Peer for the benchmark: a broadcast server on ``picows`` (Cython WebSocket frames on asyncio).

WebSocket clients connect on ``--port`` (any path), receive ``connected``, send
``{"type":"subscribe","channels":[...]}`` and get ``subscribed`` (``{"type":"ping"}``: ``pong``),
like local_bridge's ``/ws``. picows only speaks the WebSocket upgrade, so publishing is the same
HTTP/1.1 keep-alive listener as the websockets peer's, in the same event loop, on ``--http-port``:
``POST /api/websocket/broadcast`` with local_bridge's body builds the envelope once, encodes it
once into a bytearray with room for the frame header in front, and hands that same buffer to
``WSTransport.send_reuse_external_bytearray`` of every subscriber of the channel: one frame
header written in place and one socket write per delivery, no payload copy (picows copies only
what the socket does not take at once). No backpressure, as with ``websockets.broadcast()``.
``GET /health`` answers 200.

picows runs on aiofastnet's transports when that package is installed (picows' default, and a
dependency of picows 2.3); ``--plain-asyncio`` uses asyncio's own transports instead.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
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
from picows import (  # noqa: E402
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

HEADROOM = 14  # bytes picows needs before the payload for the longest server frame header
subscribers: dict[str, set[WSTransport]] = {}
seq = 0


def send_text(transport: WSTransport, text: str) -> None:
    transport.send(WSMsgType.TEXT, text.encode())


class Subscriber(WSListener):
    """One WebSocket client: the setup dialogue, and its channels until it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.joined: set[str] = set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        send_text(transport, reply("connected", client_id=str(uuid.uuid4()), seq=seq))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return  # pings are answered by picows itself (auto pong)
        try:
            doc = json.loads(frame.get_payload_as_bytes())
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if doc.get("type") == "subscribe":
            for channel in doc.get("channels") or ():
                subscribers.setdefault(channel, set()).add(transport)
                self.joined.add(channel)
            send_text(transport, reply("subscribed", channels=sorted(self.joined), seq=seq))
        elif doc.get("type") == "ping":
            send_text(transport, reply("pong"))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for channel in self.joined:
            subscribers.get(channel, set()).discard(transport)


def publish(type_: str, channel: str | None, data: dict) -> tuple[int, int]:
    """The envelope serialized and encoded once; the same buffer sent to every subscriber (the
    server's frame header, the same for all, is rewritten in its headroom; the payload is never
    masked or copied on the server side)."""
    global seq
    seq += 1
    targets = list(recipients_of(subscribers, channel))
    frame = bytearray(HEADROOM) + dumps(envelope(type_, channel, seq, data)).encode()
    for transport in targets:
        transport.send_reuse_external_bytearray(WSMsgType.TEXT, frame, HEADROOM)
    return seq, len(targets)


def listener_factory(request: WSUpgradeRequest) -> Subscriber:
    return Subscriber()


async def main(host: str, port: int, http_port: int, plain_asyncio: bool) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    http = await asyncio.start_server(http_publish_handler(publish), host, http_port, backlog=2048)
    ws = await ws_create_server(
        listener_factory,
        host,
        port,
        backlog=2048,
        max_frame_size=65536,
        use_aiofastnet=False if plain_asyncio else None,
    )
    async with ws, http:
        await stop


if __name__ == "__main__":
    args = loopback_args(
        __doc__.splitlines()[0], ("--plain-asyncio", "asyncio's transports, not aiofastnet's")
    )
    asyncio.run(main(args.host, args.port, args.http_port, args.plain_asyncio))
