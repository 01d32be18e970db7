"""Reading a request body with a cap, hashing it as it comes (for SigV4).

Up to ``cap`` bytes are kept.  A body past the cap is still read, hashed and dropped up to
``drain`` bytes, so its signature can be checked and the refusal attributed to an
authenticated caller (and recorded against its endpoint); past ``drain`` the request is cut
off unread.  Memory held per request never exceeds the cap.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from aiohttp import web

from gateway import errors

CHUNK = 1 << 16
BODY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Body:
    data: bytes          # the body; b"" when it was over the cap
    size: int            # bytes received
    sha256: str          # of every byte received ("" when read without a digest)
    over: bool = False   # larger than the cap it was read with


class BodyBudget:
    """Request-body bytes the gateway holds at once while bodies arrive, whoever sends them:
    past it, a body that would add more gets 503 (retry) instead of growing the gateway."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.held = max_bytes, 0

    def take(self, n: int) -> None:
        if self.held + n > self.max_bytes:
            raise errors.Unavailable("the gateway is receiving as many request bodies as it holds at once; retry")
        self.held += n

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


async def read_capped(request: web.Request, cap: int, drain: int | None = None,
                      timeout_s: float = BODY_TIMEOUT_S, budget: BodyBudget | None = None,
                      digest: bool = True) -> Body:
    """The body, kept up to ``cap``; raises PayloadTooLarge(cap) past ``drain`` (default: ``cap``),
    and RequestTimeout when it has not all arrived within ``timeout_s`` (a trickled body would
    otherwise hold its connection and its buffer for good)."""
    if "body" in request:                  # read (and hashed) already, by the signature check
        return request["body"]
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request, cap, drain, budget, digest)
    except TimeoutError:
        raise errors.RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None


async def _read(request: web.Request, cap: int, drain: int | None, budget: BodyBudget | None,
                digest: bool) -> Body:
    drain = cap if drain is None else max(cap, drain)
    if request.content_length is not None and request.content_length > drain:
        raise errors.PayloadTooLarge(cap)
    sha, buf, size, held = hashlib.sha256() if digest else None, bytearray(), 0, 0
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > drain:
                raise errors.PayloadTooLarge(cap)
            if sha is not None:
                sha.update(chunk)
            if size <= cap:
                if budget is not None:
                    budget.take(len(chunk))
                    held += len(chunk)
                buf += chunk
            elif buf:
                buf = bytearray()              # past the cap: keep nothing of it
    finally:
        if budget is not None:
            budget.give(held)                  # counted while it arrives: slow bodies are what pile up
    over = size > cap
    return Body(b"" if over else bytes(buf), size, sha.hexdigest() if sha is not None else "", over)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body's bytes, or PayloadTooLarge(limit)."""
    body = await read_capped(request, limit, digest=False)   # a signature check, if any, read it already
    if body.over or body.size > limit:     # (a body read earlier was read with a larger cap)
        raise errors.PayloadTooLarge(limit)
    return body.data
