"""``slimserve doctor``: which sandbox protections are in force here, and why not.

A running gateway answers from what its backend probed at start (each mechanism
tried for real in a throwaway child: ``runtime.process.probe``); without one, the
CLI makes a backend and has it probe here, so the answer is true for this
machine and this user.
"""
from __future__ import annotations

import asyncio
import os

from gateway.config import MEMORY_TIERS_MB
from gateway.pools.cpu import tier_vcpus


def report(settings, backend, probe: bool = False, data: dict | None = None) -> dict:
    """{"backend": name, protection: {"ok", "mechanism", "detail"}, ..., "data": where model
    data comes from}.  Without ``probe`` it only reads what ``backend`` found at its start (safe
    on the event loop); with it, a backend that was never opened probes first.  ``data``: the
    running gateway's data plane (``DataPlane.snapshot``)."""
    if probe and settings.backend == "process":
        asyncio.run(backend.probe())
    return {"backend": settings.backend, **backend.protections(), "cpu_tiers": cpu_tiers(settings),
            "data": data or {}}


def cpu_tiers(settings) -> dict[str, float]:
    """Each serverless memory tier's CPU quota here, in vCPUs (0: no quota)."""
    cores = os.cpu_count() or 1
    return {str(mb): tier_vcpus(mb, settings.cpu_per_gb, cores) for mb in MEMORY_TIERS_MB}
