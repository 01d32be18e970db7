"""A CloudWatch Logs subset over the gateway's own log files: DescribeLogStreams, GetLogEvents
and FilterLogEvents (AWS JSON 1.1, ``X-Amz-Target: Logs_20140328.<Operation>``, signed with the
same keys), so the SageMaker Python SDK's ``Transformer.wait()`` (``logs=True``) and
``aws logs`` read what jobs and endpoints printed.

Log groups, as SageMaker names them:
  /aws/sagemaker/TransformJobs        a stream ``<job>/slimserve`` per transform job
  /aws/sagemaker/Endpoints/<name>     a stream ``AllTraffic/slimserve`` per endpoint

Errors as the service gives them: ``ResourceNotFoundException`` for an unknown group or
stream, ``InvalidParameterException`` for a bad member or token.
"""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from gateway import errors
from gateway.logs import events as ev

TARGET_PREFIX = "Logs_20140328"
JOBS_GROUP = "/aws/sagemaker/TransformJobs"
ENDPOINTS_GROUP = "/aws/sagemaker/Endpoints/"
JOB_STREAM_SUFFIX = "/slimserve"
ENDPOINT_STREAM = "AllTraffic/slimserve"
MAX_RESPONSE_BYTES = 1 << 20           # as CloudWatch: at most 1 MB of events per answer


def _bad(message: str) -> errors.Named:
    return errors.Named(message, "InvalidParameterException")


def _missing(message: str) -> errors.Named:
    return errors.Named(message, "ResourceNotFoundException")


def _str(req: dict, key: str, required: bool = False, max_len: int = 512) -> str | None:
    value = req.get(key)
    if value is None:
        if required:
            raise _bad(f"1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member "
                       "must not be null")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise _bad(f"1 validation error detected: Value at '{key}' failed to satisfy constraint: Member must have "
                   f"length between 1 and {max_len}")
    return value


def _int(req: dict, key: str, lo: int, hi: int | None = None) -> int | None:
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        raise _bad(f"1 validation error detected: Value '{value}' at '{key}' failed to satisfy constraint: Member "
                   f"must have value {'between %d and %d' % (lo, hi) if hi is not None else f'>= {lo}'}")
    return value


def _token(kind: str, index: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{index}".encode()).decode()


def _untoken(token, kinds: tuple[str, ...]) -> tuple[str, int]:
    try:
        kind, _, n = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if kind in kinds and int(n) >= 0:
            return kind, int(n)
    except (ValueError, UnicodeDecodeError):
        pass
    raise _bad("The specified nextToken is invalid.")


class LogsApi:
    def __init__(self, job_names, job_log, endpoint_names, endpoint_log):
        """``job_names``: async () -> names of transform jobs; ``job_log(name)``: its log file;
        ``endpoint_names()``: the endpoints; ``endpoint_log(name)``: its log file."""
        self.job_names, self.job_log = job_names, job_log
        self.endpoint_names, self.endpoint_log = endpoint_names, endpoint_log

    def operations(self) -> dict:
        return {"DescribeLogStreams": self.describe_log_streams, "GetLogEvents": self.get_log_events,
                "FilterLogEvents": self.filter_log_events}

    # --- groups and streams ---------------------------------------------------------------
    async def _streams(self, req: dict) -> tuple[str, dict[str, Path]]:
        group = _str(req, "logGroupName") or _str(req, "logGroupIdentifier", max_len=2048)
        if group is None:
            raise _bad("Either logGroupName or logGroupIdentifier is required.")
        group = group.rsplit(":log-group:", 1)[-1].removesuffix(":*")      # an ARN names the group too
        if group == JOBS_GROUP:
            return group, {n + JOB_STREAM_SUFFIX: self.job_log(n) for n in await self.job_names()}
        if group.startswith(ENDPOINTS_GROUP) and group[len(ENDPOINTS_GROUP):] in self.endpoint_names():
            name = group[len(ENDPOINTS_GROUP):]
            return group, {ENDPOINT_STREAM: self.endpoint_log(name)}
        raise _missing("The specified log group does not exist.")

    async def describe_log_streams(self, req: dict) -> dict:
        group, streams = await self._streams(req)
        prefix = _str(req, "logStreamNamePrefix")
        order = req.get("orderBy") or "LogStreamName"
        if order not in ("LogStreamName", "LastEventTime"):
            raise _bad("1 validation error detected: Value at 'orderBy' failed to satisfy constraint: Member must "
                       "satisfy enum value set: [LogStreamName, LastEventTime]")
        if prefix is not None and order == "LastEventTime":
            raise _bad("Cannot order by LastEventTime with a logStreamNamePrefix.")
        limit = _int(req, "limit", 1, 50) or 50
        start = _untoken(req["nextToken"], ("s",))[1] if req.get("nextToken") else 0
        names = [n for n in streams if prefix is None or n.startswith(prefix)]
        docs = await asyncio.to_thread(lambda: [self._stream_doc(group, n, streams[n]) for n in names])
        docs = [d for d in docs if d is not None]
        key = "logStreamName" if order == "LogStreamName" else "lastEventTimestamp"
        docs.sort(key=lambda d: (d.get(key) or 0, d["logStreamName"]), reverse=bool(req.get("descending")))
        out = {"logStreams": docs[start:start + limit]}
        if start + limit < len(docs):
            out["nextToken"] = _token("s", start + limit)
        return out

    @staticmethod
    def _stream_doc(group: str, name: str, path: Path) -> dict | None:
        paths = [path.with_name(path.name + ".1"), path]
        found = [p for p in paths if p.exists()]
        if not found:
            return None
        stats = [p.stat() for p in found]
        lines, mtime = ev.read_lines(found)
        evs = ev.events(lines, mtime)
        doc = {"logStreamName": name, "creationTime": int(min(s.st_ctime for s in stats) * 1000),
               "storedBytes": sum(s.st_size for s in stats),
               "arn": f"arn:aws:logs:::log-group:{group}:log-stream:{name}"}
        if evs:
            doc.update(firstEventTimestamp=evs[0].timestamp, lastEventTimestamp=evs[-1].timestamp,
                       lastIngestionTime=int(mtime * 1000))
        return doc

    async def _events(self, path: Path) -> list[ev.Event]:
        def read():
            lines, mtime = ev.read_lines([path.with_name(path.name + ".1"), path])
            return ev.events(lines, mtime)
        return await asyncio.to_thread(read)

    # --- events -----------------------------------------------------------------------------
    async def get_log_events(self, req: dict) -> dict:
        _, streams = await self._streams(req)
        name = _str(req, "logStreamName", required=True)
        if name not in streams:
            raise _missing("The specified log stream does not exist.")
        start_ms, end_ms = _int(req, "startTime", 0), _int(req, "endTime", 0)
        limit = _int(req, "limit", 1, 10000) or 10000
        evs = [e for e in await self._events(streams[name])
               if (start_ms is None or e.timestamp >= start_ms) and (end_ms is None or e.timestamp < end_ms)]
        if req.get("nextToken"):
            kind, pos = _untoken(req["nextToken"], ("f", "b"))
        else:
            kind, pos = ("f", 0) if req.get("startFromHead") else ("b", len(evs))
        if kind == "f":
            chosen = _capped([e for e in evs if e.index >= pos], limit)
        else:
            before = [e for e in evs if e.index < pos]
            chosen = list(reversed(_capped(list(reversed(before)), limit)))
        first = chosen[0].index if chosen else pos
        after = chosen[-1].index + 1 if chosen else pos
        return {"events": [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp}
                           for e in chosen],
                "nextForwardToken": _token("f", after), "nextBackwardToken": _token("b", first)}

    async def filter_log_events(self, req: dict) -> dict:
        _, streams = await self._streams(req)
        names = req.get("logStreamNames")
        prefix = _str(req, "logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise _bad("logStreamNames and logStreamNamePrefix are mutually exclusive.")
        if names is not None:
            if not isinstance(names, list) or not 1 <= len(names) <= 100 or not all(isinstance(n, str) for n in names):
                raise _bad("logStreamNames must be a list of 1 to 100 stream names.")
            wanted = [n for n in names if n in streams]
        else:
            wanted = sorted(n for n in streams if prefix is None or n.startswith(prefix))
        pattern = req.get("filterPattern")
        if pattern is not None and (not isinstance(pattern, str) or len(pattern) > 1024):
            raise _bad("filterPattern must be a string of at most 1024 characters.")
        start_ms, end_ms = _int(req, "startTime", 0), _int(req, "endTime", 0)
        limit = _int(req, "limit", 1, 10000) or 10000
        skip = _untoken(req["nextToken"], ("e",))[1] if req.get("nextToken") else 0
        found = []
        for n in wanted:
            for e in await self._events(streams[n]):
                if (start_ms is None or e.timestamp >= start_ms) and (end_ms is None or e.timestamp < end_ms) \
                        and ev.matches(e.message, pattern):
                    found.append((e.timestamp, n, e))
        found.sort(key=lambda t: (t[0], t[1], t[2].index))
        page = _capped([t[2] for t in found[skip:]], limit)
        names_of = [t[1] for t in found[skip:skip + len(page)]]
        out = {"events": [{"logStreamName": n, "timestamp": e.timestamp, "message": e.message,
                           "ingestionTime": e.timestamp, "eventId": f"{n}:{e.index}"}
                          for n, e in zip(names_of, page, strict=True)],
               "searchedLogStreams": [{"logStreamName": n, "searchedCompletely": True} for n in wanted]}
        if skip + len(page) < len(found):
            out["nextToken"] = _token("e", skip + len(page))
        return out


def _capped(evs: list[ev.Event], limit: int) -> list[ev.Event]:
    """At most ``limit`` events and about 1 MB of messages."""
    out, size = [], 0
    for e in evs[:limit]:
        size += len(e.message) + 26
        if out and size > MAX_RESPONSE_BYTES:
            break
        out.append(e)
    return out
