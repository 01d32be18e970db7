"""The endpoint service: deploy, update, describe, delete -- the one place that
changes endpoints, used by the admin API now and the SageMaker control plane later.

Every change is validated, persisted, then applied to the pools; a new bundle
is loaded once in a sandbox before it is accepted, so a bundle that cannot
load is refused at deploy rather than at its first request.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from pathlib import Path

from gateway.config import Settings
from gateway.domain import EndpointSpec, VariantSpec
from gateway.errors import BundleRejected, Conflict, Invalid, NotFound, Throttled
from gateway.pools.manager import PoolManager
from gateway.serving.bundles import (
    Limits,
    install,
    install_artifacts,
    install_shared_code,
    make_readable,
    off_loop,
    unpack,
)
from gateway.store.base import Store
from runtime.sandbox import StartError

PROGRAM_ENV = "SAGEMAKER_PROGRAM"               # the entry script in code/, as SageMaker's framework containers read it


class EndpointService:
    def __init__(self, settings: Settings, store: Store, manager: PoolManager):
        self.settings = settings
        self.store = store
        self.manager = manager
        self.specs: dict[str, EndpointSpec] = {}
        # One lock per endpoint name: a change waits only for changes of the same endpoint, so a
        # large bundle being unpacked and trial-loaded never holds up another endpoint's deploy.
        self._locks: dict[str, asyncio.Lock] = {}

    def _locked(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def busy(self, name: str) -> bool:
        """Whether a change of the endpoint is under way (a deploy may hold it for a long load)."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    async def load(self) -> None:
        """Restore endpoints saved by an earlier run."""
        for spec in await self.store.load_endpoints():
            self.specs[spec.name] = spec
            await self._apply(spec)

    def get(self, name: str) -> EndpointSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise NotFound(f"endpoint {name} not found")
        return spec

    def list(self) -> list[EndpointSpec]:
        return [self.specs[n] for n in sorted(self.specs)]

    async def deploy(self, name: str, upload: Path | None, variant: VariantSpec,
                     tags: dict[str, str] | None = None, copy: bool = False) -> EndpointSpec:
        """A new endpoint of one variant from ``upload`` (consumed; ``copy``: left as it is)."""
        async with self._locked(name):
            if name in self.specs:
                raise Conflict(f"endpoint {name} already exists; use update")
            if upload is None and not variant.multi_model:
                raise Invalid("deploy needs a bundle")
            now = time.time()
            spec = EndpointSpec(name=name, variants=[replace(variant, bundle_version=1)],
                                tags=dict(tags or {}), created=now, updated=now)
            spec.validate()
            spec.variants[0] = await self._install(name, upload, spec.variants[0], copy=copy)
            await self.store.put_endpoint(spec)
            self.specs[name] = spec
            await self._apply(spec)
            return spec

    async def update(self, name: str, upload: Path | None = None, *, memory_mb: int | None = None,
                     max_concurrency: int | None = None, provisioned: int | None = None,
                     tags: dict[str, str] | None = None, variant_name: str | None = None,
                     copy: bool = False) -> EndpointSpec:
        async with self._locked(name):
            old = self.get(name)
            target = old.variant(variant_name) if variant_name else old.variants[0]
            if target is None:
                raise NotFound(f"endpoint {name} has no variant {variant_name}")
            changes = {k: v for k, v in dict(memory_mb=memory_mb, max_concurrency=max_concurrency,
                                             provisioned=provisioned).items() if v is not None}
            new_variant = replace(target, **changes)
            new = replace(old, variants=[new_variant if v is target else v for v in old.variants],
                          tags=dict(old.tags, **(tags or {})), updated=time.time())
            new.validate()
            if upload is not None:
                version = max(v.bundle_version for v in old.variants) + 1
                installed = await self._install(name, upload, replace(new_variant, bundle_version=version), copy=copy)
                new.variants = [installed if v is new_variant else v for v in new.variants]
            elif new_variant.memory_mb != target.memory_mb and self.settings.validate_on_deploy:
                await self._trial_load(name, new_variant)
            await self.store.put_endpoint(new)
            self.specs[name] = new
            await self._apply(new)
            await self._prune_bundles(new)
            return new

    async def put(self, name: str, variants: list[tuple[VariantSpec, Path]], tags: dict[str, str] | None = None,
                  *, replace_existing: bool = False, code: dict[str, Path] | None = None) -> EndpointSpec:
        """Create an endpoint (or replace all of its variants: blue/green) from variants whose
        bundles come from local sources (a model directory, model.tar.gz or .pkl, left in place);
        ``code``: by variant name, the source code (SAGEMAKER_SUBMIT_DIRECTORY) added to its bundle.
        Every new bundle is installed and trial-loaded before traffic moves; in-flight requests
        on the old variants finish on them."""
        async with self._locked(name):
            old = self.specs.get(name)
            if old is not None and not replace_existing:
                raise Conflict(f"endpoint {name} already exists")
            if old is None and replace_existing:
                raise NotFound(f"endpoint {name} not found")
            base = max((v.bundle_version for v in old.variants), default=0) if old else 0
            now = time.time()
            staged = [replace(v, bundle_version=base + i + 1) for i, (v, _) in enumerate(variants)]
            spec = EndpointSpec(name=name, variants=staged,
                                tags=dict(tags if tags is not None else old.tags if old else {}),
                                created=old.created if old else now, updated=now)
            spec.validate()
            installed = []
            try:
                for v, (_, source) in zip(staged, variants, strict=True):
                    installed.append(await self._install(name, Path(source) if source else None, v, copy=True,
                                                         code=(code or {}).get(v.name)))
            except BaseException:
                for v in installed:
                    await _remove(v.bundle_dir)
                raise
            spec.variants = installed
            await self.store.put_endpoint(spec)
            self.specs[name] = spec
            await self._apply(spec)
            if old is not None:                    # the old bundles stay while their pools drain
                await self._prune_bundles(spec, keep_also={Path(v.bundle_dir).name for v in old.variants})
            return spec

    async def set_variants(self, name: str, changes: dict[str, dict]) -> EndpointSpec:
        """Change weights and counts of existing variants in place (warm sandboxes stay)."""
        async with self._locked(name):
            old = self.get(name)
            unknown = set(changes) - {v.name for v in old.variants}
            if unknown:
                raise NotFound(f"endpoint {name} has no variant {sorted(unknown)[0]}")
            new = replace(old, variants=[replace(v, **changes.get(v.name, {})) for v in old.variants],
                          updated=time.time())
            new.validate()
            await self.store.put_endpoint(new)
            self.specs[name] = new
            await self._apply(new)
            return new

    async def set_tags(self, name: str, tags: dict[str, str]) -> EndpointSpec:
        """Replace an endpoint's tags (bills group costs by them)."""
        async with self._locked(name):
            new = replace(self.get(name), tags=dict(tags), updated=time.time())
            new.validate()
            await self.store.put_endpoint(new)
            self.specs[name] = new
            return new

    async def delete(self, name: str) -> None:
        async with self._locked(name):
            self.get(name)
            await self.store.delete_endpoint(name)
            del self.specs[name]
            await self.manager.remove(name)
            await _remove(self.settings.bundles_dir / name)

    async def _apply(self, spec: EndpointSpec) -> None:
        await self.manager.configure(spec.name, spec.variants)
        for v in spec.variants:
            self.manager.pool(spec.name, v.name).keep_floor()

    def bundle_limits(self, variant: VariantSpec) -> Limits:
        """A bundle may unpack to the variant's memory size (a larger one could not load into it
        with most frameworks), or to ``--max-bundle-mb`` where the operator set one."""
        mb = self.settings.max_bundle_mb or variant.memory_mb
        return Limits(max_bytes=int(mb * (1 << 20)))

    async def _install(self, name: str, upload: Path | None, variant: VariantSpec, copy: bool = False,
                       code: Path | None = None) -> VariantSpec:
        dest = self.settings.bundles_dir / name / f"v{variant.bundle_version}"
        await _remove(dest)
        limits = self.bundle_limits(variant)
        if variant.multi_model:           # no model of its own: the shared code, if any; models come on demand
            self.manager.multi_models.check(variant)
            kind = await off_loop(install_shared_code, dest, code, variant.env.get(PROGRAM_ENV), limits)
        elif variant.image:               # the container brings its own server: artifacts are copied as they are
            kind = await off_loop(install_artifacts, upload, dest, limits)
        else:
            program = variant.env.get(PROGRAM_ENV)
            kind = await off_loop(install if copy else unpack, upload, dest, limits, code, program)
        await off_loop(make_readable, dest)
        installed = replace(variant, bundle_kind=kind, bundle_dir=str(dest.resolve()))
        if self.settings.validate_on_deploy:
            try:
                await self._trial_load(name, installed)
            except BaseException:                  # refused, no room to check it, or cancelled: not kept
                await asyncio.shield(_remove(dest))
                raise
        return installed

    async def _trial_load(self, name: str, variant: VariantSpec) -> None:
        """Load the bundle once in a real sandbox at its tier, then stop it."""
        try:
            await self.manager.trial_load(name, variant)
        except Throttled as exc:
            raise Invalid(exc.message) from None
        except StartError as exc:
            raise BundleRejected(exc.message) from None

    async def _prune_bundles(self, spec: EndpointSpec, keep_also: set[str] = frozenset()) -> None:
        """Keep the bundles in use and the one before them (a retired pool may still start from it)."""
        keep = {Path(v.bundle_dir).name for v in spec.variants} | set(keep_also)
        newest = max(v.bundle_version for v in spec.variants)
        keep.add(f"v{newest - 1}")
        root = self.settings.bundles_dir / spec.name
        for child in root.iterdir() if root.exists() else []:
            if child.name not in keep:
                await _remove(child)

    def describe(self, name: str) -> dict:
        spec = self.get(name)
        pools = {p["variant"]: p for p in self.manager.snapshot() if p["endpoint"] == name and not p["draining"]}
        failures = [p["last_failure"] for p in pools.values() if p.get("last_failure")]
        return {
            "name": spec.name,
            "status": "InService",
            "tags": spec.tags,
            "created": spec.created,
            "updated": spec.updated,
            "last_failure": failures[0] if failures else None,
            "variants": [
                {
                    "name": v.name, "memory_mb": v.memory_mb, "max_concurrency": v.max_concurrency,
                    "provisioned": v.provisioned, "weight": v.weight, "bundle_kind": v.bundle_kind,
                    "bundle_version": v.bundle_version, "pool": pools.get(v.name),
                    "model_prefix": v.model_prefix, "model_cache": v.model_cache if v.multi_model else None,
                }
                for v in spec.variants
            ],
        }


async def _remove(path) -> None:
    """Remove a bundle directory (if there) in a thread: a model's tree can be large."""
    await asyncio.to_thread(shutil.rmtree, path, True)
