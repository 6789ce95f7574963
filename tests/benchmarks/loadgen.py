"""A lean HTTP/1.1 load client for the serving benchmark: keep-alive connections on asyncio.

The servers and the load loop share the benchmark machine's cores, so every CPU millisecond
the client spends per request is taken from the server under test, and the faster a server
answers the more the client takes from it. httpx spends about 2 ms of CPU per request here
(its transport, header models, JSON encoding), as much as the service's event loop and a
third of what scoring a text costs; a load tool such as wrk or oha spends a few microseconds.
This client writes each request as one prepared byte string and reads the answer by its
``Content-Length`` (uvicorn answers every route here with one), so almost all of the CPU is
left to the servers, as it would be with the client on another machine.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 with a Content-Length."""


class Connection:
    """One keep-alive connection; ``post`` sends a JSON body and returns (status, body)."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s  # per request, as the httpx client's timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def request(self, path: str, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one prepared request and read its answer; a broken connection is reopened
        for the next request and raised as ``HttpError``."""
        try:
            return await asyncio.wait_for(self._exchange(request), self.timeout_s)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            await self._open()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, close = parse_head(head)
        body = await self._reader.readexactly(length)
        if close:
            self.close()
        return status, body

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        return await self.send(self.request(path, payload))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the server closes) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.x answer: {lines[0][:60]!r}")
    status = int(lines[0].split(" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length is None:
        raise HttpError("answer without Content-Length")
    return status, length, close
