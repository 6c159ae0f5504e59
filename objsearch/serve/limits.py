"""Checks made before a request's body is read (ASGI middleware): the token, and the body's size.

A request to the API without the token is answered 401 before anything of it is read (FastAPI
would parse a JSON body before running a route's dependencies). A declared Content-Length over the
limit is answered 413 at once; a body sent without one (chunked) is counted as it arrives and the
request fails with 413 as soon as it passes the limit, so no request can make the server hold more
than the limit in memory.
"""

from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException


class BodyTooLarge(HTTPException):
    """Raised from the body stream: an HTTPException, so the app answers it as its own 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_message(max_bytes))


def too_large_message(max_bytes: int) -> str:
    return f"the request body is larger than the {max_bytes:,}-byte limit"


class BodySizeLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        await _respond(send, 413, too_large_message(self.max_bytes))


class TokenRequired:
    """401 for a request under ``prefix`` (except the ``open_paths``) without ``Authorization:
    Bearer TOKEN``; the token is compared in constant time."""

    def __init__(self, app, token: str, prefix: str, open_paths: tuple[str, ...] = ()) -> None:
        self.app, self.token, self.prefix, self.open_paths = app, token.encode(), prefix, open_paths

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(self.prefix) and path not in self.open_paths:
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                await _respond(send, 401, "a valid token is needed: send the header Authorization: Bearer TOKEN")
                return
        await self.app(scope, receive, send)


async def _respond(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
