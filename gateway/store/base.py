"""The one interface every store implements: the catalog (endpoints and SageMaker resources),
the usage ledger with its roll-ups, and the reads bills and exports make.

``gateway.store.sqlite.Store`` is the embedded default; a PostgreSQL store is a second
implementation that passes the same tests.  Callers depend on this protocol, never on SQL:
every query lives in ``gateway.store``.
"""
from __future__ import annotations

from typing import Protocol

from gateway.domain import EndpointSpec, ProvisionedRecord, QueuedRequest, UsageRecord
from gateway.store.ledger import Base


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # --- the catalog ---------------------------------------------------------------
    async def put_endpoint(self, spec: EndpointSpec) -> None: ...
    async def delete_endpoint(self, name: str) -> None:
        """Gone from the catalog; its last spec is kept so its bills keep its tags."""
    async def load_endpoints(self) -> list[EndpointSpec]: ...
    async def put_resource(self, kind: str, name: str, doc: dict) -> None:
        """A SageMaker resource ("model", "endpoint-config", "endpoint") as its API describes it."""
    async def delete_resource(self, kind: str, name: str) -> None: ...
    async def load_resources(self) -> list[tuple[str, str, dict]]: ...

    # --- the asynchronous-inference queue: leases, see ``gateway.store.queue_sql`` ----------
    async def enqueue_async(self, req: QueuedRequest) -> None:
        """On disk when it returns: the 202 is sent after it."""
    async def claim_async(self, endpoint: str, owner: str, now: float, lease_s: float,
                          limit: int) -> list[QueuedRequest]: ...
    async def renew_async(self, ids: list[str], owner: str, until: float) -> set[str]:
        """The ids whose leases ``owner`` still held (and now holds longer)."""
    async def finish_async(self, rid: str, owner: str | None, state: str, now: float,
                           error: str | None = None) -> bool: ...
    async def retry_async(self, rid: str, owner: str, not_before: float, error: str, refund: bool = False) -> bool: ...
    async def release_async_owner(self, owner_prefix: str, keep_owner: str) -> int: ...
    async def expired_async(self, now: float, limit: int = 1000) -> list[QueuedRequest]: ...
    async def open_async(self, endpoint: str, limit: int = 1000) -> list[QueuedRequest]: ...
    async def get_async(self, rid: str) -> QueuedRequest | None: ...
    async def async_backlog(self) -> dict[str, tuple[int, int, float | None]]: ...
    async def prune_async(self, before: float) -> int: ...

    # --- the ledger: durable once these return ------------------------------------------
    async def insert_usage(self, records: list[UsageRecord]) -> None:
        """The records and their hourly roll-ups in one transaction, on disk when it returns."""
    async def insert_provisioned(self, records: list[ProvisionedRecord]) -> None: ...
    async def add_idle(self, deltas: dict) -> None:
        """Idle sandbox-ms per (hour, endpoint, variant, memory_mb): roll-ups only."""
    async def prune_usage(self, before: float, batch: int = 20_000) -> int:
        """Drop raw records before the hour boundary ``before``; roll-ups stay. How many went."""

    # --- reads --------------------------------------------------------------------------
    async def read_bills(self, since: float | None, until: float | None,
                         dim_sets: list[list[str]]) -> tuple[list[Base], dict[str, dict[str, str]]]:
        """Per grouping in ``dim_sets``, the ledger's sums over [since, until); and endpoint tags."""
    async def hour_span(self, since: float | None, until: float | None) -> tuple[float | None, float | None]: ...
    async def query_usage(self, endpoint: str | None = None, since: float | None = None,
                          until: float | None = None, limit: int | None = None) -> list[dict]: ...
    async def usage_page(self, kind: str = "invocation", endpoint: str | None = None, since: float | None = None,
                         until: float | None = None, after: int = 0, size: int = 5000) -> list[dict]:
        """Up to ``size`` records after cursor ``after``, oldest first, each with its ``seq``."""
    async def query_provisioned(self, endpoint: str | None = None, since: float | None = None,
                                until: float | None = None, limit: int | None = None) -> list[dict]: ...
