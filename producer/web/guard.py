"""Two ASGI middlewares in front of every route, static files and the OpenAPI schema included:
read-only (GET and HEAD, nothing else) and, when configured, HTTP basic auth."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})
REALM = 'Basic realm="triplets", charset="UTF-8"'


class ReadOnly:
    """405 for any method but GET and HEAD, before routing: no route can be reached by a write.

    HEAD is answered as GET without the body: FastAPI routes declare GET alone (so the OpenAPI
    schema lists only GET), and FastAPI, unlike Starlette, does not add HEAD to them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] not in READ_METHODS:
            response = PlainTextResponse("read-only: GET and HEAD only", 405, headers={"Allow": "GET, HEAD"})
            await response(scope, receive, send)
        elif scope["method"] == "HEAD":
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
        else:
            await self.app(scope, receive, send)


def _without_body(send: Send) -> Send:
    async def send_headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)
    return send_headers_only


class BasicAuth:
    """401 with a challenge unless the request carries ``user:password``."""

    def __init__(self, app: ASGIApp, *, credentials: str) -> None:
        self.app = app
        self.expected = credentials.encode("utf-8")

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        # Constant time over the whole "user:password": neither part leaks through timing.
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = PlainTextResponse("authentication required", 401, headers={"WWW-Authenticate": REALM})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
