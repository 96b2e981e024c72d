"""``AsyncBridge`` on a scripted server: events on the loop, callbacks on the loop, the end."""

from __future__ import annotations

import asyncio
import threading

import pytest
from scripted import Connection, Script, event, replay_complete, subscribed

from local_bridge.client import Backoff, ResyncRequired, Unrecoverable
from local_bridge.client import bridge as bridge_module
from local_bridge.client.aio import AsyncBridge

FAST = Backoff(initial=0.01, maximum=0.05)


def install(monkeypatch, *connections):
    monkeypatch.setattr(bridge_module, "BusClient", Script(*connections).factory)


def test_events_and_callbacks_arrive_on_the_loop(monkeypatch):
    install(monkeypatch, Connection([subscribed(0), event(1), event(2)]))

    async def main():
        loop_thread = threading.current_thread()
        threads = []
        async with AsyncBridge("ws://bus/ws") as bridge:
            bridge.on("job_progress", lambda e: threads.append(threading.current_thread()))
            got = []
            async for item in bridge.events():
                got.append(item["seq"])
                if len(got) == 2:
                    break
        assert got == [1, 2] and bridge.state == "closed"
        await asyncio.sleep(0)  # let the callbacks queued on the loop run
        assert all(t is loop_thread for t in threads)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_stopping_close_raises_from_the_iterator(monkeypatch):
    install(monkeypatch, Connection([subscribed(0), event(1)], end=4009))

    async def main():
        async with AsyncBridge("ws://bus/ws", backoff=FAST) as bridge:
            with pytest.raises(Unrecoverable):
                async for _ in bridge.events():
                    pass

    asyncio.run(asyncio.wait_for(main(), 10))


def test_raise_on_resync(monkeypatch):
    install(
        monkeypatch,
        Connection([subscribed(3)], end=1006),
        Connection([subscribed(0), replay_complete(3, 0, False), event(1)], epoch="e2"),
    )

    async def main():
        async with AsyncBridge("ws://bus/ws", backoff=FAST, raise_on_resync=True) as bridge:
            with pytest.raises(ResyncRequired):
                async for _ in bridge.events():
                    pass
            assert bridge.needs_resync
            async for item in bridge.events():
                assert item["seq"] == 1
                break

    asyncio.run(asyncio.wait_for(main(), 10))
