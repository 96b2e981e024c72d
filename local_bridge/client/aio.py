"""``AsyncBridge``: the :class:`~local_bridge.client.Bridge` for asyncio programs.

The connection stays on the Bridge's own thread (its reconnect, resume, heartbeat and refresh
logic is the same code); each event crosses to the event loop with
``loop.call_soon_threadsafe``, and the blocking calls (connect, close, subscribe) run in the
default executor. So nothing blocks the loop, at the cost of one thread per connection.

    async with AsyncBridge("ws://127.0.0.1:5100/ws", channels=["jobs"]) as bridge:
        async for event in bridge.events():
            print(event["type"])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from .backoff import Unrecoverable
from .bridge import DEFAULT_URL, Bridge, Handler, ResyncRequired

_END = object()


class AsyncBridge:
    """Takes the keyword arguments of :class:`Bridge` (``channels``, ``client_type``, ``token``,
    ``since``, ``epoch``, ``backoff``, ``read_deadline``, ``raise_on_resync`` ...). Callbacks
    given to :meth:`on`, :meth:`on_resync` and :meth:`on_state` run on the event loop."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any):
        self._raise_on_resync = bool(options.pop("raise_on_resync", False))
        self.bridge = Bridge(url, queue_events=False, **options)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncBridge:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> AsyncBridge:
        """Open the first connection (see :meth:`Bridge.connect`, whose errors it raises)."""
        self._loop = asyncio.get_running_loop()
        self.bridge.on("*", lambda event: self._to_loop(self._queue.put_nowait, event))
        self.bridge.on_state(self._state_changed)
        await asyncio.to_thread(self.bridge.connect)
        return self

    async def close(self) -> None:
        """Close the connection and stop its thread."""
        await asyncio.to_thread(self.bridge.close)

    async def wait(self) -> None:
        """Until the bridge stops; raises :class:`Unrecoverable` as :meth:`Bridge.wait` does."""
        await asyncio.to_thread(self.bridge.wait)

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Bus events and ``replay_complete`` messages, as :meth:`Bridge.events` yields them."""
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)
                if self.bridge.error is not None:
                    raise self.bridge.error
                return
            if (
                self._raise_on_resync
                and item.get("type") == "replay_complete"
                and not item.get("recovered")
            ):
                yield item
                raise ResyncRequired(item)
            yield item

    def on(self, event_type: str, callback: Handler) -> Callable[[], None]:
        """As :meth:`Bridge.on`; ``callback`` runs on the event loop."""
        return self.bridge.on(event_type, lambda event: self._to_loop(callback, event))

    def on_resync(self, callback: Handler) -> None:
        """As :meth:`Bridge.on_resync`; ``callback`` runs on the event loop."""
        self.bridge.on_resync(lambda info: self._to_loop(callback, info))

    def on_state(self, callback: Callable[[str], object]) -> None:
        """As :meth:`Bridge.on_state`; ``callback`` runs on the event loop."""
        self.bridge.on_state(lambda state: self._to_loop(callback, state))

    async def subscribe(self, channels: Iterable[str]) -> dict[str, Any] | None:
        """As :meth:`Bridge.subscribe`."""
        return await asyncio.to_thread(self.bridge.subscribe, list(channels))

    async def unsubscribe(self, channels: Iterable[str]) -> dict[str, Any] | None:
        """As :meth:`Bridge.unsubscribe`."""
        return await asyncio.to_thread(self.bridge.unsubscribe, list(channels))

    # ------------------------------------------------------------------ state

    @property
    def seq(self) -> int | None:
        return self.bridge.seq

    @property
    def epoch(self) -> str | None:
        return self.bridge.epoch

    @property
    def client_id(self) -> str | None:
        return self.bridge.client_id

    @property
    def connected(self) -> bool:
        return self.bridge.connected

    @property
    def state(self) -> str:
        return self.bridge.state

    @property
    def needs_resync(self) -> bool:
        return self.bridge.needs_resync

    @needs_resync.setter
    def needs_resync(self, value: bool) -> None:
        self.bridge.needs_resync = value

    @property
    def error(self) -> Unrecoverable | None:
        return self.bridge.error

    # ------------------------------------------------------------------ the crossing

    def _state_changed(self, state: str) -> None:
        if state == "closed":
            self._to_loop(self._queue.put_nowait, _END)

    def _to_loop(self, function: Callable[[Any], object], argument: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the program's loop is gone: nobody is left to tell
        try:
            loop.call_soon_threadsafe(function, argument)
        except RuntimeError:  # closed between the check and the call
            pass
