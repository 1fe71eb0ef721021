"""The LangGraph routes' route class: the native API's checks, and errors that carry
FastAPI's `detail` (what the LangGraph SDKs read) beside the native envelope."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stubichat_common.errors import DETAIL_FLAG
from stubichat_common.routing import JSONRoute


class LangGraphRoute(JSONRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def marked(request: Request) -> Response:
            setattr(request.state, DETAIL_FLAG, True)
            return await handler(request)

        return marked
