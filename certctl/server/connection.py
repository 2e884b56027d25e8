"""How each connection of the HTTPS listener behaves: hypercorn's connection classes, fixed.

Three things hypercorn 0.18 (under quart-trio) does differently from what its settings
say, measured over TLS and plaintext alike:

- ``read_timeout`` applies to every single receive, also while the app works or the
  connection idles, and its expiry only stops reading: a client that sent half a request
  head is closed only when the keep-alive timer started at connect time runs out;
- after a quart-trio response the keep-alive timer is never re-armed (quart-trio cancels
  the app's task, and with it the re-arming), so idle connections are closed at
  ``read_timeout`` instead, and a handler slower than ``read_timeout`` is cut without an
  answer;
- its own refusals of a request it cannot parse (431 for an oversized head, 400) have an
  empty body, so a client gets no ``{error, message, request_id}`` to act on.

``Connection`` makes ``CERTCTL_SERVER_READ_TIMEOUT`` bound the receiving of one request
(head and body, from its first bytes; then the connection is closed) and
``CERTCTL_SERVER_IDLE_TIMEOUT`` alone bound the wait for the next one, and never cuts a
handler; an unexpected protocol error ends its connection only. ``JSONErrorsH11`` sends
certctl's JSON error body with hypercorn's refusals. ``install`` puts both where
hypercorn looks them up by name. HTTP/2's refusal of oversized headers is a GOAWAY frame,
which has no body to carry.
"""

from __future__ import annotations

import json
from itertools import chain
from math import inf

import h11
import hypercorn.protocol
import hypercorn.trio.run
import trio
from h2.stream import StreamState
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from certctl.logging import get_logger

_log = get_logger(__name__)

__all__ = ["Connection", "JSONErrorsH11", "install"]

# h2 stream states in which the client may still send request HEADERS/DATA.
_CLIENT_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)


class Connection(TCPServer):
    """One connection: see the module docstring for what it fixes."""

    _read_over = False

    async def run(self) -> None:
        try:
            await super().run()
        except Exception as exc:
            _log.warning("connection ended by a protocol error", error=repr(exc))

    def _receiving_request(self) -> bool:
        protocol = self.protocol.protocol
        if isinstance(protocol, H11Protocol):
            connection = protocol.connection
            if not isinstance(connection, h11.Connection):
                return False  # a WebSocket
            if connection.their_state is h11.SEND_BODY:
                return True
            # h11 stays IDLE until a whole head has arrived: buffered bytes are a partial head.
            return connection.their_state is h11.IDLE and bool(connection.trailing_data[0])
        if isinstance(protocol, H2Protocol):
            return any(
                stream.state_machine.state in _CLIENT_SENDING
                for stream in protocol.connection.streams.values()
            )
        return False

    async def _read_data(self) -> None:
        deadline = inf
        while True:
            if not self._receiving_request():
                deadline = inf
            elif deadline == inf:
                deadline = trio.current_time() + (self.config.read_timeout or inf)
            try:
                with trio.fail_at(deadline):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        # Nothing more will be read: end once the requests in flight have, not when the
        # idle timer fires.
        self._read_over = True
        await self.idle_task.stop()
        await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle and self._read_over:
                event = Closed()
            # Sent from the app's task, which quart-trio cancels as soon as the response is
            # done: unshielded, re-arming the idle timer is cancelled half-way.
            with trio.CancelScope(shield=True):
                await super().protocol_send(event)
            return
        await super().protocol_send(event)


_PROTOCOL_ERRORS = {
    431: (
        "request_header_fields_too_large",
        "the request line and headers exceed {limit} bytes; send fewer or shorter headers.",
    ),
    400: ("bad_request", "the request is not valid HTTP/1.1; fix it and retry."),
}


class JSONErrorsH11(H11Protocol):
    """hypercorn's own HTTP/1.1 refusals (431, 400) with certctl's JSON error body."""

    async def _send_error_response(self, status_code: int) -> None:
        code, message = _PROTOCOL_ERRORS.get(status_code, ("error", "the request is refused."))
        body = json.dumps(
            {
                "error": code,
                "message": message.format(limit=self.config.h11_max_incomplete_size),
                "request_id": "",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=list(chain(headers, self.config.response_headers("h11"))),
            )
        )
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make hypercorn build these: ``worker_serve`` makes one ``TCPServer`` per accepted
    connection, and ``ProtocolWrapper`` one ``H11Protocol`` per HTTP/1.1 connection, both
    by module-level name."""
    hypercorn.trio.run.TCPServer = Connection  # type: ignore[attr-defined]
    hypercorn.protocol.H11Protocol = JSONErrorsH11  # type: ignore[attr-defined]
