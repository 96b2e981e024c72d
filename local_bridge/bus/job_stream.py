"""One job's progress stream, ``/ws/jobs/<job_id>`` (PROTOCOL.md section 4).

The client joins the job's sub-channel before its snapshot is read, with a gate in front of
its outbox: events that arrive meanwhile wait behind the gate and follow the snapshot, so none
is lost between the read and the subscription. The terminal event closes the stream (1000).

The job's state comes from a snapshot callable the application hands over (the bus knows
nothing of the job store).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import catalog
from .. import protocol as p
from ..auth.service import ConnectionAuth
from .connection import BusConnection
from .facade import Bus
from .gate import GatedTransport
from .transport import Transport

#: ``snapshot(job_id)``: None for an unknown job, else the ``job_status`` fields and, for a job
#: that is over, its terminal event as ``(type, fields)``.
JobSnapshot = Callable[[str], "tuple[dict[str, Any], tuple[str, dict[str, Any]] | None] | None"]
#: The events that end a job, and its stream (PROTOCOL.md section 4).
TERMINAL_TYPES = frozenset({"job_completed", "job_failed", "job_cancelled"})


class JobStreamConnection(BusConnection):
    """Snapshot, then the job's events live, then close (1000) at its end."""

    __slots__ = ("job_id", "snapshot", "gate")

    #: The bus's answers to the messages a job stream takes (it has no channels to manage).
    ACTIONS = {
        kind: BusConnection.ACTIONS[kind] for kind in ("ping", "pong", "authenticate", "refresh")
    }

    def __init__(
        self,
        bus: Bus,
        transport: Transport,
        remote_addr: str | None,
        job_id: str,
        snapshot: JobSnapshot,
        auth: ConnectionAuth | None = None,
    ):
        super().__init__(bus, transport, remote_addr, auth)
        self.job_id = job_id
        self.snapshot = snapshot
        self.gate = GatedTransport(transport)
        self.client.transport = self.gate
        self.client.client_type = "job_stream"
        self.client.client_name = f"job {job_id}"
        self.client.broadcasts = False
        self.client.on_event = self._on_event

    def start(self) -> bool:
        hub = self.bus.hub
        channel = f"jobs:{self.job_id}"
        if self.auth is not None:
            if self.auth.pending:  # listed (closed at shutdown); starts once authenticated
                hub.add(self.client)
                return True
            if not self.auth.allows(channel):
                self.gate.open(
                    [
                        p.text_frame(
                            p.error_reply(
                                p.ErrorCode.FORBIDDEN, f"this token does not allow {channel}"
                            )
                        )
                    ]
                )
                self.transport.close(p.CloseCode.FORBIDDEN)
                return False
        if p.is_valid_channel(channel):
            hub.add(self.client)
            hub.subscribe(self.client, [channel])
        found = self.snapshot(self.job_id)
        if found is None:
            hub.remove(self.client)
            self.gate.open(
                [p.text_frame(p.error_reply(p.ErrorCode.JOB_NOT_FOUND, "Job not found"))]
            )
            self.transport.close(p.CloseCode.NOT_FOUND)
            return False
        status, terminal = found
        snapshot = p.text_frame(p.reply("job_status", **status))
        if terminal is not None:  # already over: the snapshot, its end, and goodbye
            hub.remove(self.client)
            type_, fields = terminal
            # Rebuilt from the job's row: it carries no seq, being a statement of the end, not
            # the live event (which the client may never have been connected for).
            ending = {
                "type": type_,
                "timestamp": p.utc_timestamp(),
                "channel": "jobs",
                "seq": None,
                **catalog.validate_event(type_, fields),
            }
            # Live events held meanwhile (this very ending, perhaps) would only repeat it.
            self.gate.open([snapshot, p.text_frame(ending)], keep_held=False)
            self.transport.close(p.CloseCode.NORMAL)
            return False
        self.gate.open([snapshot])
        return True

    def _authenticated(self, reply: dict[str, Any]) -> None:
        self.send(reply)
        self.start()

    def _refresh(self, body: dict[str, Any]) -> None:
        super()._refresh(body)
        claims = self.client.auth
        if claims is not None and not claims.allows(f"jobs:{self.job_id}"):
            self.bus.hub.remove(self.client)  # the new token no longer covers this job
            self.transport.close(p.CloseCode.FORBIDDEN)

    def _on_event(self, event: p.BusEvent) -> None:
        if event.type in TERMINAL_TYPES:
            self.bus.hub.remove(self.client)
            self.gate.close(p.CloseCode.NORMAL)

    def _custom(self, message: p.ClientMessage) -> None:
        raise p.ProtocolError(
            p.ErrorCode.UNKNOWN_TYPE, f"unknown message type {message.type!r}", message.type
        )
