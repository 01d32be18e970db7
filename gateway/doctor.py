"""``slimserve doctor``: which sandbox protections are in force here, and why not.

A running gateway answers from what its backend probed at start (each mechanism
tried for real in a throwaway child: ``runtime.jail.probe``); without one, the
same probe runs here, so the answer is true for this machine and this user.
"""
from __future__ import annotations

import asyncio


def report(settings, backend=None) -> dict:
    """{"backend": name, protection: {"ok", "mechanism", "detail"}, ...}.  With ``backend`` it
    only reads what that backend found (safe on the event loop); without one it probes."""
    if backend is None:
        from .app import make_backend

        backend = make_backend(settings)
        if settings.backend == "process":
            asyncio.run(backend.probe())
    return {"backend": settings.backend, **backend.protections()}
