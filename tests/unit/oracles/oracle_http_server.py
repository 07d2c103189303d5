"""A hostile price API served by a real aiohttp server on a loopback port."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0
    # Stream this many extra bytes without a Content-Length (for size limits).
    stream_bytes: int = 0
    content_length: bool = True


@dataclass
class HostileApi:
    base: str = ""
    replies: dict[str, Reply] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def set(self, name: str, payload: Any = None, *, raw: bytes | None = None, **kw: Any) -> str:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.replies[name] = Reply(body=body, **kw)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        self.last_headers[name] = dict(request.headers)
        reply = self.replies.get(name)
        if reply is None:
            return web.Response(status=404, text="no such route")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.stream_bytes:
            resp = web.StreamResponse(status=reply.status)
            resp.content_type = "application/json"
            await resp.prepare(request)
            chunk = b" " * 65536
            sent = 0
            try:
                while sent < reply.stream_bytes:
                    await resp.write(chunk)
                    sent += len(chunk)
                await resp.write_eof()
            except (ConnectionResetError, ConnectionError):
                pass
            return resp
        return web.Response(status=reply.status, body=reply.body, content_type="application/json")
