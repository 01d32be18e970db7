"""Notifications of asynchronous results: SageMaker's message, published to an SNS topic
(``arn:aws:sns:...``, through boto3 to ``serve --sns-endpoint-url`` or the standard AWS
configuration) or, as a slimserve extension, POSTed to an ``http(s)://`` URL -- but only to a
host the operator allowed (``serve --notify-allow HOST[:PORT]``; none by default), never to an
address a user typed.

Off the request's path: messages wait in a bounded queue and are sent by one task, each tried
``ATTEMPTS`` times with a growing delay; one that still fails, or finds the queue full, is
dropped and counted (``slimserve_async_notifications_total{result}``), and the output in S3
remains the record.  Delivery is at least once: a request re-run after a crash may notify twice.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from urllib.parse import urlsplit

log = logging.getLogger("slimserve.notify")

ATTEMPTS = 3
DELAYS_S = (1.0, 4.0)
QUEUE_MAX = 10_000
SENDERS = 4
HTTP_TIMEOUT_S = 10.0


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def message(region: str, req, ok: bool, now: float, content_type: str | None = None, body: bytes | None = None,
            error: str | None = None) -> dict:
    """SageMaker's InferenceResult message (the shape its documentation shows)."""
    params = {"endpointName": req.endpoint}
    for key, value in (("contentType", req.content_type), ("accept", req.accept),
                       ("customAttributes", req.custom_attributes), ("inputLocation", req.input_location)):
        if value:
            params[key] = value
    doc = {"awsRegion": region, "eventTime": iso(now), "receivedTime": iso(req.received),
           "invocationStatus": "Completed" if ok else "Failed", "requestParameters": params,
           "inferenceId": req.inference_id, "eventVersion": "1.0", "eventSource": "aws:sagemaker",
           "eventName": "InferenceResult"}
    if ok:
        doc["responseParameters"] = {"contentType": content_type or "application/octet-stream",
                                     "outputLocation": req.output_location}
    else:
        doc["failureReason"] = error or "the request failed"
        doc["responseParameters"] = {"failureLocation": req.failure_location}
    if body is not None:              # IncludeInferenceResponseIn: the answer (<= 128 KB) itself
        try:
            doc["inferenceResponse"] = {"body": body.decode("utf-8"), "encoding": "UTF-8"}
        except UnicodeDecodeError:
            doc["inferenceResponse"] = {"body": base64.b64encode(body).decode(), "encoding": "BASE64"}
    return doc


def allowed(url: str, allow: tuple[str, ...]) -> bool:
    """Whether an http(s):// topic's host (or host:port) is one the operator allowed."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return False
    return host in allow or (port is not None and f"{host}:{port}" in allow)


class Notifier:
    def __init__(self, region: str, sns_endpoint_url: str | None, allow: tuple[str, ...], clock):
        self.region = region
        self.sns_endpoint_url = sns_endpoint_url
        self.allow = tuple(a.lower() for a in allow)
        self.clock = clock
        self.counts = {"sent": 0, "failed": 0, "dropped": 0, "refused": 0}
        self._queue: asyncio.Queue = asyncio.Queue(QUEUE_MAX)
        self._sns = {}                # region -> boto3 client
        self._http = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def send(self, topic: str, doc: dict) -> None:
        """Queue one message for ``topic``; never blocks, never raises."""
        if topic.startswith(("http://", "https://")) and not allowed(topic, self.allow):
            self.counts["refused"] += 1
            log.warning("notification to %s not sent: its host is not allowed (serve --notify-allow)", topic)
            return
        try:
            self._queue.put_nowait((topic, doc, 0))
        except asyncio.QueueFull:
            self.counts["dropped"] += 1

    async def run(self) -> None:
        """Send what is queued (a background loop of the gateway's): ``SENDERS`` at once, so one
        slow or failing topic holds up only its own messages; a failed message is queued again
        after its delay rather than waited for."""
        async def sender():
            while True:
                topic, doc, attempt = await self._queue.get()
                try:
                    await self._deliver(topic, doc)
                    self.counts["sent"] += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - tried again, then counted
                    if attempt + 1 >= ATTEMPTS:
                        self.counts["failed"] += 1
                        log.warning("notification to %s failed %d times, dropped: %s", topic, ATTEMPTS, exc)
                    else:
                        asyncio.get_running_loop().call_later(DELAYS_S[min(attempt, len(DELAYS_S) - 1)],
                                                              self._again, topic, doc, attempt + 1)

        await asyncio.gather(*(sender() for _ in range(SENDERS)))

    def _again(self, topic: str, doc: dict, attempt: int) -> None:
        try:
            self._queue.put_nowait((topic, doc, attempt))
        except asyncio.QueueFull:
            self.counts["dropped"] += 1

    async def _deliver(self, topic: str, doc: dict) -> None:
        text = json.dumps(doc)
        if topic.startswith("arn:"):
            region = topic.split(":")[3] or self.region
            await asyncio.to_thread(lambda: self._client(region).publish(TopicArn=topic, Message=text))
            return
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        async with self._http.post(topic, data=text, headers={"Content-Type": "application/json"},
                                   allow_redirects=False) as resp:       # a redirect could leave the allowed host
            if resp.status >= 300:
                raise RuntimeError(f"{topic} answered {resp.status}")

    def _client(self, region: str):
        client = self._sns.get(region)
        if client is None:
            if len(self._sns) >= 32:               # one per region: a bounded few
                self._sns.clear()
            import boto3
            from botocore.config import Config

            client = self._sns[region] = boto3.session.Session().client(
                "sns", region_name=region, endpoint_url=self.sns_endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=10))
        return client
