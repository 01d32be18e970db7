"""The model a transform job runs, installed in the job's own directory: a SageMaker model (its
model data fetched through the data plane and unpacked, with its source code), or an endpoint
deployed with the CLI (a copy of its first variant's bundle), so nothing an endpoint does to
its bundles while the job runs can change the job's."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from gateway.batch.compute import Bundle
from gateway.errors import BundleRejected
from gateway.sagemaker.catalog import Catalog
from gateway.serving.bundles import Limits, copy_tree, install, install_artifacts, make_readable, off_loop
from gateway.serving.endpoints import PROGRAM_ENV


def known(catalog: Catalog, name: str) -> bool:
    return name in catalog.models or catalog.cli_endpoint(name) is not None


def multi_model(catalog: Catalog, name: str) -> bool:
    spec = catalog.cli_endpoint(name) if name not in catalog.models else None
    return spec.variants[0].multi_model if spec is not None else catalog.is_multi_model(name)


async def install_model(catalog: Catalog, name: str, dest: Path, limits: Limits) -> Bundle:
    spec = catalog.cli_endpoint(name) if name not in catalog.models else None
    if spec is not None:
        v = spec.variants[0]
        await off_loop(copy_tree, Path(v.bundle_dir), dest)
        await off_loop(make_readable, dest)
        return Bundle(str(dest), v.bundle_kind, dict(v.env), v.image, v.network_isolation)
    model = catalog.models.get(name)
    if model is None:
        raise catalog.not_found("model", name)
    container = (model.get("Containers") or [model.get("PrimaryContainer") or {}])[0]
    image = container.get("Image")
    own_server = bool(image and catalog.can_run_image and await asyncio.to_thread(catalog.can_run_image, image))
    env = dict(container.get("Environment") or {})
    source = catalog.model_source(container)
    if source is None and not own_server:
        raise BundleRejected(f"model {name} has no ModelDataUrl and its Image is not a local image the docker "
                             "backend can run")
    code = None if own_server else catalog.submit_directory(container)
    async with contextlib.AsyncExitStack() as stack:
        path = await stack.enter_async_context(catalog.fetched(source)) if source is not None else None
        code_path = await stack.enter_async_context(catalog.fetched(code)) if code is not None else None
        if own_server:
            kind = await off_loop(install_artifacts, path, dest, limits)
        else:
            kind = await off_loop(install, path, dest, limits, code_path, env.get(PROGRAM_ENV))
    await off_loop(make_readable, dest)
    return Bundle(str(dest), kind, env, image if own_server else None, bool(model.get("EnableNetworkIsolation")))
