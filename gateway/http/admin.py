"""The admin API, used by the CLI and the Python client.

All routes live under /admin and need ``Authorization: Bearer <token>``, the
token the gateway wrote to ``<state-dir>/admin-token`` at first start.

  GET    /admin/endpoints                      list
  PUT    /admin/endpoints/{name}?memory_mb=..  deploy; body = .pkl or model.tar.gz
                       (&multi_model=PREFIX[&model_cache=0]: a multi-model endpoint of the models under PREFIX)
  PATCH  /admin/endpoints/{name}?...           update settings and/or bundle (body optional)
  GET    /admin/endpoints/{name}               describe
  DELETE /admin/endpoints/{name}               delete
  GET    /admin/endpoints/{name}/logs?tail=N   sandbox stdout/stderr
  GET    /admin/endpoints/{name}/models        a multi-model endpoint's loaded models
  POST   /admin/endpoints/{name}/scale-in      stop idle sandboxes now (down to the provisioned floor)
  GET    /admin/zygotes                        the zygotes that fork sandboxes, and their state
  GET    /admin/usage?endpoint=&since=&until=&limit=&kind=invocation|provisioned&format=json|csv
                       (without limit every record is streamed; limit<=100000 gives the last N;
                        after=SEQ&page=N: one page from a cursor, the next in X-Slimserve-Next-After)
  GET    /admin/bill?since=&until=&by=endpoint|variant|tier|tag:KEY|hour|day[,..]&format=json|csv|html
  GET    /admin/doctor                         protections in force

Errors: ``{"error": CODE, "message": ...}`` with 400, 401, 404 or 409.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import uuid
from pathlib import Path

from aiohttp import web

from gateway import errors
from gateway.config import DEFAULT_MAX_CONCURRENCY, DEFAULT_VARIANT
from gateway.domain import VariantSpec, parse_tags
from gateway.errors import Invalid
from gateway.http.wire import admin_error
from gateway.metering import bill_text as billreport
from gateway.metering import billing
from gateway.metering.billing import BillingError, parse_by, parse_time
from runtime.sandbox import WARMUP_ENV

MAX_BUNDLE_BYTES = 16 << 30


def ensure_token(path: Path) -> str:
    """Read the admin token, creating it (mode 0600) on first start."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def _int_arg(q, name: str, default=None):
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer, not {raw!r}") from None


def _float_arg(q, name: str):
    raw = q.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise Invalid(f"{name} must be a number (Unix seconds), not {raw!r}") from None


class AdminApi:
    def __init__(self, gw, token: str):
        self.gw = gw
        self.token = token

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/endpoints", self.list),
            web.put("/admin/endpoints/{name}", self.deploy),
            web.patch("/admin/endpoints/{name}", self.update),
            web.get("/admin/endpoints/{name}", self.describe),
            web.delete("/admin/endpoints/{name}", self.delete),
            web.get("/admin/endpoints/{name}/logs", self.logs),
            web.get("/admin/endpoints/{name}/models", self.models),
            web.post("/admin/endpoints/{name}/scale-in", self.scale_in),
            web.get("/admin/zygotes", self.zygotes),
            web.get("/admin/usage", self.usage),
            web.get("/admin/bill", self.bill),
            web.get("/admin/doctor", self.doctor),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if not request.path.startswith("/admin"):
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return admin_error(errors.Unauthorized("missing or wrong admin token (see <state-dir>/admin-token)"))
        try:
            return await handler(request)
        except (errors.Invalid, errors.NotFound, errors.Conflict) as exc:
            return admin_error(exc)

    async def _save_upload(self, request: web.Request) -> Path | None:
        if not request.body_exists:
            return None
        uploads = self.gw.settings.state_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        path = uploads / f"upload-{uuid.uuid4().hex}"
        size = 0
        with open(path, "wb") as fh:               # written in a thread: a bundle can be hundreds of MB
            async for chunk in request.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > MAX_BUNDLE_BYTES:
                    fh.close()
                    path.unlink()
                    raise Invalid(f"bundle exceeds {MAX_BUNDLE_BYTES} bytes")
                await asyncio.to_thread(fh.write, chunk)
        if size == 0:
            path.unlink()
            return None
        return path

    async def list(self, request):
        return web.json_response([self.gw.endpoints.describe(s.name) for s in self.gw.endpoints.list()])

    async def deploy(self, request):
        q = request.query
        memory = _int_arg(q, "memory_mb")
        if memory is None:
            raise Invalid("memory_mb is required")
        variant = VariantSpec(
            name=q.get("variant") or DEFAULT_VARIANT, memory_mb=memory,
            max_concurrency=_int_arg(q, "max_concurrency", DEFAULT_MAX_CONCURRENCY),
            provisioned=_int_arg(q, "provisioned", 0),
            env={WARMUP_ENV: "0"} if q.get("warmup", "1").lower() in ("0", "false", "no") else {},
            model_prefix=q.get("multi_model") or None,
            model_cache=q.get("model_cache", "1").lower() not in ("0", "false", "no", "disabled"),
        )
        name = request.match_info["name"]
        tags = parse_tags(q.getall("tag", []))
        if variant.multi_model:
            if request.body_exists and request.content_length:
                raise Invalid("a multi-model endpoint takes its models from its prefix: send no bundle")
            await self.gw.endpoints.deploy(name, None, variant, tags)
        elif q.get("model_data_url"):
            async with self._model_data(request) as source:
                await self.gw.endpoints.deploy(name, source, variant, tags, copy=True)
        else:
            upload = await self._save_upload(request)
            try:
                await self.gw.endpoints.deploy(name, upload, variant, tags)
            finally:
                if upload is not None and upload.exists():
                    upload.unlink()
        return web.json_response(self.gw.endpoints.describe(name), status=201)

    async def update(self, request):
        q = request.query
        name = request.match_info["name"]
        changes = dict(memory_mb=_int_arg(q, "memory_mb"), max_concurrency=_int_arg(q, "max_concurrency"),
                       provisioned=_int_arg(q, "provisioned"), tags=parse_tags(q.getall("tag", [])),
                       variant_name=q.get("variant"))
        if q.get("model_data_url"):
            async with self._model_data(request) as source:
                await self.gw.endpoints.update(name, source, copy=True, **changes)
        else:
            upload = await self._save_upload(request)
            try:
                await self.gw.endpoints.update(name, upload, **changes)
            finally:
                if upload is not None and upload.exists():
                    upload.unlink()
        return web.json_response(self.gw.endpoints.describe(name))

    def _model_data(self, request: web.Request):
        """``?model_data_url=``: a bundle the gateway reads itself (S3, or local under a model root),
        instead of an upload; a request may not carry both."""
        if request.body_exists and request.content_length:
            raise Invalid("give a bundle upload or model_data_url, not both")
        data = self.gw.data
        return data.local(data.locate(request.query["model_data_url"], "model_data_url"),
                          max_bytes=self.gw.settings.max_model_bytes)

    async def models(self, request):
        """Per variant of a multi-model endpoint: the models its sandboxes have loaded now."""
        spec = self.gw.endpoints.get(request.match_info["name"])
        out = []
        for v in spec.variants:
            pool = self.gw.manager.pool(spec.name, v.name)
            if not v.multi_model:
                continue
            out.append({"variant": v.name, "prefix": v.model_prefix,
                        "models": pool.loaded() if pool is not None else []})
        if not out:
            raise Invalid(f"Endpoint {spec.name} is not a multi-model endpoint.")
        return web.json_response({"endpoint": spec.name, "variants": out})

    async def describe(self, request):
        return web.json_response(self.gw.endpoints.describe(request.match_info["name"]))

    async def delete(self, request):
        name = request.match_info["name"]
        await self.gw.endpoints.delete(name)
        return web.json_response({"deleted": name})

    async def logs(self, request):
        name = request.match_info["name"]
        self.gw.endpoints.get(name)
        tail = _int_arg(request.query, "tail", 200)
        path = self.gw.manager.log_path(name)
        text = await asyncio.to_thread(_tail, path, tail) if path.exists() else ""
        return web.Response(text=text, content_type="text/plain")

    async def scale_in(self, request):
        name = request.match_info["name"]
        spec = self.gw.endpoints.get(name)
        stopped = 0
        for v in spec.variants:
            pool = self.gw.manager.pool(name, v.name)
            if pool is not None:
                stopped += await pool.reap([c.sandbox_id for c in pool.evictable()], "scaled in by the operator")
        return web.json_response({"endpoint": name, "stopped": stopped})

    async def zygotes(self, request):
        return web.json_response(self.gw.backend.snapshot())

    EXPORT_PAGE = 5000
    MAX_LIMIT = 100_000          # the last N records are gathered in memory; all of them are streamed

    async def usage(self, request):
        q = request.query
        args = dict(endpoint=q.get("endpoint") or None, since=_float_arg(q, "since"),
                    until=_float_arg(q, "until"), limit=_int_arg(q, "limit"))
        kind = q.get("kind", "invocation")
        page = _int_arg(q, "page", self.EXPORT_PAGE)
        if not 1 <= page <= 50_000:
            raise Invalid(f"page must be 1 to 50000 records, not {page}")
        if "after" in q:                    # one page of records after a cursor, with the next cursor
            rows = await self.gw.store.usage_page(kind, args["endpoint"], args["since"], args["until"],
                                                  _int_arg(q, "after") or 0, page)
            headers = {"X-Slimserve-Next-After": str(rows[-1]["seq"])} if len(rows) == page else {}
            return web.Response(body=json.dumps(rows).encode(), content_type="application/json", headers=headers)
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise Invalid(f"format must be json or csv, not {fmt!r}")
        if not args["limit"]:
            return await self._export(request, kind, args, page, fmt)
        if not 1 <= args["limit"] <= self.MAX_LIMIT:
            raise Invalid(f"limit must be 1 to {self.MAX_LIMIT} records (for more, leave it out: every "
                              "record is streamed, or page with after=SEQ)")
        if kind == "provisioned":
            rows = await self.gw.store.query_provisioned(**args)
        else:
            rows = await self.gw.store.query_usage(**args)
        if fmt == "csv":
            return web.Response(text=billreport.records_csv(rows), content_type="text/csv")
        return web.Response(body=json.dumps(rows).encode(), content_type="application/json")

    async def _export(self, request, kind: str, args: dict, page: int, fmt: str) -> web.StreamResponse:
        """Every matching record, as CSV or a JSON array, streamed a page at a time: memory
        stays flat however long the ledger (a million records are a gigabyte as Python objects)."""
        ctype = "text/csv" if fmt == "csv" else "application/json"
        resp = web.StreamResponse(headers={"Content-Type": f"{ctype}; charset=utf-8"})
        await resp.prepare(request)
        after, first = 0, True
        if fmt == "json":
            await resp.write(b"[")
        while True:
            rows = await self.gw.store.usage_page(kind, args["endpoint"], args["since"], args["until"], after, page)
            if not rows:
                break
            after = rows[-1]["seq"]
            rows = [{k: v for k, v in r.items() if k != "seq"} for r in rows]
            if fmt == "csv":
                chunk = billreport.records_csv(rows, header=first)
            else:
                chunk = ("" if first else ",") + json.dumps(rows)[1:-1]
            await resp.write(chunk.encode())
            first = False
            if len(rows) < page:
                break
        if fmt == "json":
            await resp.write(b"]")
        await resp.write_eof()
        return resp

    async def bill(self, request):
        q = request.query
        now = self.gw.clock.wall()
        since, until = parse_time(q.get("since"), now), parse_time(q.get("until"), now)
        by = parse_by(q.get("by", "endpoint"))
        fmt = q.get("format", "json")
        if fmt == "html":
            from gateway.metering.bill_html import render

            docs = await billing.bill_set(self.gw.store, since, until, by, self.gw.prices)
            return web.Response(text=render(docs), content_type="text/html")
        doc = await billing.bill(self.gw.store, since, until, by, self.gw.prices)
        if fmt == "csv":
            return web.Response(text=billreport.rows_csv(doc), content_type="text/csv")
        if fmt != "json":
            raise BillingError(f"format must be json, csv or html, not {fmt!r}")
        return web.json_response(doc)

    async def doctor(self, request):
        from gateway.cli.doctor import report

        local = self.gw.local_s3
        data = dict(self.gw.data.snapshot(), local_s3=self.gw.local_s3_url,
                    local_s3_isolated=bool(local and local.isolated))
        return web.json_response(report(self.gw.settings, self.gw.backend, data=data))


def _tail(path: Path, lines: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = min(size, max(4096, lines * 200))
        fh.seek(size - block)
        data = fh.read()
    text = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) + ("\n" if text else "")
