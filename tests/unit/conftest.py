"""Fixtures the unit tests share."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on loopback standing in for the sidecar's marker port (the client's datagrams)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()
