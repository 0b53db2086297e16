"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), started and stopped around a block."""

from __future__ import annotations

import contextlib
import socket

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_smtp(handler, **server_options):
    """Serve ``handler`` (an aiosmtpd handler that records or misbehaves) on a free loopback port;
    ``server_options`` go to aiosmtpd's SMTP (auth_required=..., authenticator=...)."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **server_options)
    controller.loop.set_exception_handler(lambda loop, context: None)  # dropped clients are part of the tests
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
