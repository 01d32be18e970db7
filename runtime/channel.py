"""A sandbox reached over a stream (a socket pair, or a Unix socket into a container):
the invoke path every such backend shares.  Subclasses say how the sandbox died and
how to stop it."""
from __future__ import annotations

import abc
import asyncio
import os
import time

from runtime import protocol
from runtime.sandbox import (
    BAD_OUTPUT,
    DEAD_HANDLE,
    LOAD_FAILED,
    OUT_OF_MEMORY,
    TIMEOUT,
    InvokeRequest,
    InvokeResult,
    LoadResult,
    Sandbox,
    State,
    oom_message,
    too_large_message,
)

DEFAULT_MAX_RESPONSE = 6 << 20


class ChannelSandbox(Sandbox):
    """``max_response_bytes``: the largest answer accepted.  The worker refuses to send a larger
    one (a clean ModelError, the sandbox stays); a sandbox that announces one anyway is cut off
    before the gateway reads a byte of it, and replaced."""

    def __init__(self, spec, listeners, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE):
        super().__init__(spec, listeners)
        self._reader = reader
        self._writer = writer
        self.max_response_bytes = max_response_bytes

    @abc.abstractmethod
    async def _death_cause(self) -> tuple[str, str]:
        """(error kind, message) after the channel broke during an invocation."""

    @abc.abstractmethod
    def _out_of_memory_text(self) -> str:
        """What the caller reads when the model exceeded its memory tier."""

    def _begin_destroy(self, reason: str) -> bool:
        """First step of every destroy: False if already dead, else note why and close the channel."""
        if self.state is State.DEAD:
            return False
        self.death_reason = reason
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the transport may already be gone
            pass
        return True

    async def invoke(self, request: InvokeRequest, timeout_s: float) -> InvokeResult:
        if self.state is not State.IDLE:
            return InvokeResult(False, error_kind=DEAD_HANDLE, message=f"sandbox {self.id} is {self.state.value}")
        self._move(State.BUSY)
        if request.response_file:              # spooled to disk: the caller's own limit (async: 1 GB)
            limit = request.max_response or protocol.MAX_PAYLOAD
        else:
            limit = min(self.max_response_bytes, request.max_response or self.max_response_bytes)
        nonce = os.urandom(8).hex()            # unguessable: no answer can be sent before its request
        header = {
            "op": "invoke",
            "id": nonce,
            "content_type": request.content_type,
            "accept": request.accept,
            "custom_attributes": request.custom_attributes,
            "max_response": limit,
            "model": request.model,
        }
        t0 = time.perf_counter()
        size = None
        try:
            if request.response_file:
                reply, size = await asyncio.wait_for(self._exchange_files(header, request, limit), timeout_s)
                payload = b""
            else:
                self._writer.write(protocol.encode(header, request.body))
                await self._writer.drain()
                reply, payload = await asyncio.wait_for(
                    protocol.recv_async(self._reader, protocol.PEER_HEADER, limit), timeout_s)
        except asyncio.TimeoutError:
            await self.destroy("invocation timed out")
            return InvokeResult(
                False, error_kind=TIMEOUT, model_ms=(time.perf_counter() - t0) * 1000.0, original_status=0,
                message=f"the model did not answer within {timeout_s:g} s; its sandbox was stopped and will be "
                        "replaced",
            )
        except protocol.FrameTooLarge as exc:
            await self.destroy("sent an answer over the size limit")
            return InvokeResult(False, error_kind=BAD_OUTPUT, model_ms=(time.perf_counter() - t0) * 1000.0,
                                original_status=500, message=too_large_message(exc.payload_bytes, limit))
        except (protocol.ProtocolError, ConnectionError, OSError):
            elapsed = (time.perf_counter() - t0) * 1000.0
            kind, message = await self._death_cause()
            await self.destroy(message)
            return InvokeResult(False, error_kind=kind, model_ms=elapsed, message=message, original_status=500)
        # Run time is measured here, from handing over the request to its answer: model code runs in
        # the worker's process and could report any figure, and the bill must not depend on it.
        elapsed = (time.perf_counter() - t0) * 1000.0
        if reply.get("id") != nonce:           # an answer sent ahead of its request, or not one at all
            await self.destroy("answered out of turn")
            return InvokeResult(False, error_kind=BAD_OUTPUT, model_ms=elapsed, original_status=500,
                                message="the sandbox sent an answer that was not for this request; it was "
                                        "stopped and will be replaced")
        if reply.get("fatal"):
            await self.destroy(reply.get("error_kind") or "fatal")
        else:
            self._move(State.IDLE)
        return InvokeResult(
            ok=bool(reply.get("ok")),
            body=payload,
            content_type=_header_text(reply.get("content_type")),
            custom_attributes=_header_text(reply.get("custom_attributes")),
            model_ms=elapsed,
            error_kind=reply.get("error_kind"),
            message=(self._out_of_memory_text() if reply.get("error_kind") == OUT_OF_MEMORY
                     else reply.get("message", "")),
            original_status=reply.get("original_status"),
            size=size,
        )

    async def load_model(self, key: str, kind: str, archive: bytes, timeout_s: float) -> LoadResult:
        before = self.memory_bytes()
        reply, elapsed = await self._manage({"op": "load", "model": key, "kind": kind}, archive, timeout_s,
                                            while_loading=True)
        if reply.get("ok"):
            return LoadResult(True, load_ms=elapsed, memory_bytes=max(0, self.memory_bytes() - before))
        kind_ = reply.get("error_kind") or LOAD_FAILED
        message = oom_message(self.spec.memory_mb, while_loading=True) if kind_ == OUT_OF_MEMORY \
            else str(reply.get("message") or "the model failed to load")[:4096]
        return LoadResult(False, load_ms=elapsed, error_kind=kind_, message=message)

    async def unload_model(self, key: str, timeout_s: float) -> bool:
        reply, _ = await self._manage({"op": "unload", "model": key}, b"", timeout_s)
        return bool(reply.get("ok"))

    async def _manage(self, header: dict, payload: bytes, timeout_s: float,
                      while_loading: bool = False) -> tuple[dict, float]:
        """One ``load`` or ``unload`` exchange: (the worker's reply, ms it took).  A sandbox that
        does not answer in time, dies, or answers out of turn is destroyed (its reply: not ok)."""
        if self.state is not State.IDLE:
            return {"ok": False, "error_kind": DEAD_HANDLE, "message": f"sandbox {self.id} is {self.state.value}"}, 0.0
        self._move(State.BUSY)
        nonce = os.urandom(8).hex()
        t0 = time.perf_counter()
        try:
            self._writer.write(protocol.encode(dict(header, id=nonce), payload))
            await self._writer.drain()
            reply, _ = await asyncio.wait_for(protocol.recv_async(self._reader, protocol.PEER_HEADER, 0), timeout_s)
        except asyncio.TimeoutError:
            await self.destroy(f"{header['op']} timed out")
            return {"ok": False, "error_kind": TIMEOUT,
                    "message": f"the model did not finish loading within {timeout_s:g} s"}, timeout_s * 1000.0
        except (protocol.ProtocolError, ConnectionError, OSError):
            kind, message = await self._death_cause()
            await self.destroy(message)
            if kind == OUT_OF_MEMORY:
                message = oom_message(self.spec.memory_mb, while_loading=while_loading)
            return {"ok": False, "error_kind": kind, "message": message}, (time.perf_counter() - t0) * 1000.0
        elapsed = (time.perf_counter() - t0) * 1000.0
        if reply.get("id") != nonce or reply.get("op") != "loaded":
            await self.destroy("answered out of turn")
            return {"ok": False, "error_kind": BAD_OUTPUT, "message": "the sandbox answered out of turn"}, elapsed
        if reply.get("fatal"):
            await self.destroy(reply.get("error_kind") or "fatal")
        else:
            self._move(State.IDLE)
        return reply, elapsed

    async def _exchange_files(self, header: dict, request: InvokeRequest, limit: int) -> tuple[dict, int]:
        """Send the body (from ``body_file`` a read buffer at a time, read off the loop, or ``body``)
        and write the answer to ``response_file`` as it arrives: neither is held by the gateway."""
        if request.body_file:
            with open(request.body_file, "rb") as fh:
                self._writer.write(protocol.head(header, os.fstat(fh.fileno()).st_size))
                while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                    self._writer.write(chunk)
                    await self._writer.drain()
        else:
            self._writer.write(protocol.encode(header, request.body))
        await self._writer.drain()
        return await protocol.recv_async_to_file(self._reader, request.response_file, protocol.PEER_HEADER, limit)



def _header_text(value) -> str | None:
    """A header value the model chose (its answer's Content-Type, custom attributes): printable
    ASCII of at most 1024 characters, else none -- it is written into HTTP headers and S3 calls."""
    if isinstance(value, str) and len(value) <= 1024 and value.isascii() and value.isprintable():
        return value
    return None
