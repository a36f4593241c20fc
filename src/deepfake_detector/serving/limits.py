"""What the server checks before it reads a request's body (the API key, the content type, the
declared size, room in the work queue), and while it reads it (the size) and answers it (the deadline).

An ASGI middleware rather than FastAPI dependencies because FastAPI parses a multipart body before it
runs dependencies: a full queue or a wrong key must be refused before the server spends memory on an
upload. (FastAPI's own ``max_body_size`` answers in plain text, outside the app's error handlers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepfake_detector.serving.errors import ApiError

API_KEY_HEADER = "X-API-Key"


def check_api_key(given: str | None, expected: str | None) -> None:
    """Raises `ApiError` unless ``given`` is the server's key (or the server has none).

    The comparison takes the same time wherever the first differing byte is, so response timing
    does not leak the key.
    """
    if expected is None:
        return
    if not given:
        raise ApiError("missing_api_key", f"this server requires an API key in the {API_KEY_HEADER} header")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError("invalid_api_key", f"the {API_KEY_HEADER} header does not hold this server's API key")


@dataclass
class Admission:
    """Counts admitted work requests; the rest are refused, never queued without bound.

    Attributes:
        capacity: Most work requests admitted at once.
        in_flight: Admitted and not yet answered.
        rejected: Refused because the queue was full.
        timeouts: Answered 504 because they overran the deadline.
        disconnects: Abandoned by their client after the upload, before the answer; their work was
            cancelled and their slot freed at once.
    """

    capacity: int
    in_flight: int = 0
    rejected: int = 0
    timeouts: int = 0
    disconnects: int = 0

    def try_enter(self) -> bool:
        # No lock: only the event loop thread calls this, and there is no await in between.
        if self.in_flight >= self.capacity:
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


class RequestGuard:
    """ASGI middleware: API key on ``/v1/``; content type, size, admission and deadline on work routes.

    Args:
        app: The application inside.
        api_key: The key clients must send, or None for an open server.
        admission: Shared admission counter.
        work_routes: ``(method, path)`` pairs that take uploads and run the model.
        max_body_bytes: Largest request body; a larger declared Content-Length is refused at once, and
            a body that grows past it while being read (chunked uploads) is cut off.
        timeout_s: Deadline for a work request, from its first byte to its answer.
        retry_after_s: Retry-After sent with a full-queue 503.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        admission: Admission,
        work_routes: Collection[tuple[str, str]],
        max_body_bytes: int,
        timeout_s: float,
        retry_after_s: int,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.admission = admission
        self.work_routes = frozenset(work_routes)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if scope["path"].startswith("/v1/"):
                check_api_key(headers.get(API_KEY_HEADER), self.api_key)
            if (scope["method"], scope["path"]) in self.work_routes:
                self._check_content_type(headers.get("content-type", ""))
                self._check_declared_size(headers.get("content-length"))
        except ApiError as error:
            await error.to_response()(scope, receive, send)
            return
        if (scope["method"], scope["path"]) not in self.work_routes:
            await self.app(scope, receive, send)
            return
        if not self.admission.try_enter():
            error = ApiError(
                "queue_full",
                f"the server is at capacity ({self.admission.capacity} requests in progress); "
                f"retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await error.to_response()(scope, receive, send)
            return
        try:
            await self._call_with_deadline(scope, receive, send)
        finally:
            self.admission.leave()

    @staticmethod
    def _check_content_type(content_type: str) -> None:
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            raise ApiError(
                "unsupported_media_type",
                f"expected a multipart/form-data upload, got {content_type or 'no Content-Type'!r}; "
                "send files as form fields (curl -F 'images=@photo.jpg')",
            )

    def _check_declared_size(self, content_length: str | None) -> None:
        if (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) > self.max_body_bytes
        ):
            raise ApiError("payload_too_large", self._too_large_message())

    def _too_large_message(self) -> str:
        return (
            f"the request body is larger than the limit of {self.max_body_bytes:,} bytes (max_upload_bytes); "
            "send fewer or smaller files per request"
        )

    async def _call_with_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = finished = False
        received = 0
        body_read = asyncio.Event()

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException, because FastAPI passes those on from body parsing (others
                    # become a generic 400); the app's handler answers it as payload_too_large.
                    raise HTTPException(413, self._too_large_message())
                if not message.get("more_body", False):
                    body_read.set()
            return message

        async def send_tracking(message: Message) -> None:
            nonlocal started, finished
            started = started or message["type"] == "http.response.start"
            finished = finished or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        async def client_gone() -> None:
            # Once the body is read the app asks for nothing more, so the next message can only be the
            # client leaving. (A client that leaves mid-upload ends the app's own body read instead.)
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        answer = asyncio.ensure_future(
            asyncio.wait_for(self.app(scope, receive_limited, send_tracking), self.timeout_s)
        )
        watcher = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait((answer, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not answer.done() and not finished:
                # Nobody is left to answer: stop the work (images not yet scored leave the batch) and
                # free the request's slot now rather than at its deadline.
                self.admission.disconnects += 1
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
                return
            await answer
        except asyncio.TimeoutError:
            self.admission.timeouts += 1
            if started:  # too late to change the answer; the client sees a cut-off response
                raise
            error = ApiError(
                "timeout",
                f"the request took longer than {self.timeout_s:g} s (request_timeout_s); "
                "the server may be overloaded, retry later or send fewer images",
            )
            await error.to_response()(scope, receive, send)
        finally:
            for task in (answer, watcher):  # the server stopping cancels this coroutine, not its tasks
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
