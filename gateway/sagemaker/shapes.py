"""The SageMaker API's shapes and rules, as botocore's service model and the real service
state them: name patterns, production variants, tags, listing (sort, filter, paginate), and
errors worded the way the service words them."""
from __future__ import annotations

import base64
import json
import math
import re

from gateway.config import MAX_CONCURRENCY_RANGE, MEMORY_TIERS_MB
from gateway.errors import Invalid
from gateway.sagemaker.instances import UnknownInstanceType, instance_memory_mb

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CONTAINS_RE = re.compile(r"^[a-zA-Z0-9-]+$")
ENDPOINT_STATUSES = ("OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack", "InService",
                     "Deleting", "Failed", "UpdateRollbackFailed")


def invalid(message: str) -> Invalid:
    return Invalid(message)


def check_name(req: dict, key: str, path: str | None = None) -> str:
    value = req.get(key)
    if value is None or value == "":
        raise invalid(f"1 validation error detected: Value null at '{path or _camel(key)}' failed to satisfy "
                      "constraint: Member must not be null")
    if not isinstance(value, str):
        raise invalid(f"1 validation error detected: Value '{json.dumps(value)[:100]}' at '{path or _camel(key)}' "
                      "failed to satisfy constraint: Member must be a string")
    if not NAME_RE.match(value):
        raise invalid(f"1 validation error detected: Value '{value}' at '{path or _camel(key)}' failed to satisfy "
                      "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    return value


def check_variant(pv, i: int) -> None:
    at = f"productionVariants.{i}.member"
    if not isinstance(pv, dict):
        raise invalid(f"Value at '{at}' must be an object.")
    check_name(pv, "VariantName", f"{at}.variantName")
    check_name(pv, "ModelName", f"{at}.modelName")
    serverless, itype = pv.get("ServerlessConfig"), pv.get("InstanceType")
    if serverless is not None and not isinstance(serverless, dict):
        raise invalid(f"Value at '{at}.serverlessConfig' must be an object.")
    if itype is not None and not isinstance(itype, str):
        raise invalid(f"1 validation error detected: Value '{itype}' at '{at}.instanceType' failed to satisfy "
                      "constraint: Member must be a string")
    if bool(serverless) == bool(itype):
        raise invalid(f"Variant {pv['VariantName']}: give either ServerlessConfig or InstanceType with "
                      "InitialInstanceCount.")
    if serverless:
        mem, conc = serverless.get("MemorySizeInMB"), serverless.get("MaxConcurrency")
        prov = serverless.get("ProvisionedConcurrency", 0) or 0
        if not _whole(mem) or mem not in MEMORY_TIERS_MB:
            raise invalid(f"1 validation error detected: Value '{mem}' at '{at}.serverlessConfig.memorySizeInMB' "
                          "failed to satisfy constraint: Member must satisfy enum value set: "
                          f"[{', '.join(map(str, MEMORY_TIERS_MB))}]")
        lo, hi = MAX_CONCURRENCY_RANGE
        if not _whole(conc) or not lo <= conc <= hi:
            raise invalid(f"1 validation error detected: Value '{conc}' at '{at}.serverlessConfig.maxConcurrency' "
                          f"failed to satisfy constraint: Member must have value between {lo} and {hi}")
        if not _whole(prov) or not 0 <= prov <= conc:
            raise invalid(f"Variant {pv['VariantName']}: ProvisionedConcurrency {prov} must be between 1 and "
                          f"MaxConcurrency ({conc}).")
    else:
        try:
            instance_memory_mb(itype)
        except UnknownInstanceType as exc:
            raise invalid(f"1 validation error detected: Value '{itype}' at '{at}.instanceType' failed to satisfy "
                          f"constraint: Member must satisfy enum value set ({exc})") from None
        count = pv.get("InitialInstanceCount")
        if not _whole(count) or not 1 <= count <= MAX_CONCURRENCY_RANGE[1]:
            raise invalid(f"1 validation error detected: Value '{count}' at '{at}.initialInstanceCount' failed to "
                          f"satisfy constraint: Member must have value between 1 and {MAX_CONCURRENCY_RANGE[1]}")
    weight = pv.get("InitialVariantWeight", 1.0)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
        raise invalid(f"1 validation error detected: Value '{weight}' at '{at}.initialVariantWeight' failed to "
                      "satisfy constraint: Member must have value greater than or equal to 0")


def list_page(req: dict, docs: list[dict], name_key: str, result_key: str, summary, sort_keys,
              status_key: str = "EndpointStatus", modified: bool = False) -> dict:
    """One page of ``docs`` as List* answers: NameContains, CreationTime filters (and, where the
    operation has them, ``modified``: LastModifiedTime filters), SortBy/SortOrder, MaxResults/NextToken."""
    sort_by = req.get("SortBy") or "CreationTime"
    order = req.get("SortOrder") or "Descending"
    if sort_by not in sort_keys:
        raise invalid(f"1 validation error detected: Value '{sort_by}' at 'sortBy' failed to satisfy constraint: "
                      f"Member must satisfy enum value set: [{', '.join(sort_keys)}]")
    if order not in ("Ascending", "Descending"):
        raise invalid(f"1 validation error detected: Value '{order}' at 'sortOrder' failed to satisfy constraint: "
                      "Member must satisfy enum value set: [Ascending, Descending]")
    contains = req.get("NameContains")
    if contains is not None:
        if not isinstance(contains, str) or not CONTAINS_RE.match(contains):
            raise invalid(f"1 validation error detected: Value '{contains}' at 'nameContains' failed to satisfy "
                          "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-]+")
        docs = [d for d in docs if contains.lower() in d[name_key].lower()]
    times = [("CreationTimeBefore", "CreationTime", "lt"), ("CreationTimeAfter", "CreationTime", "gt")]
    if modified:
        times += [("LastModifiedTimeBefore", "LastModifiedTime", "lt"), ("LastModifiedTimeAfter", "LastModifiedTime",
                                                                          "gt")]
    for key, field, op in times:
        if req.get(key) is not None:
            t = timestamp(req[key], key)
            docs = [d for d in docs if (d[field] < t if op == "lt" else d[field] > t)]
    field = {"Name": name_key, "CreationTime": "CreationTime", "Status": status_key}[sort_by]
    docs.sort(key=lambda d: (d[field], d[name_key]), reverse=order == "Descending")
    size = req.get("MaxResults")
    size = 10 if size is None else size
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100:
        raise invalid(f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                      "constraint: Member must have value between 1 and 100")
    start = token_offset(req.get("NextToken"))
    out = {result_key: [summary(d) for d in docs[start:start + size]]}
    if start + size < len(docs):
        out["NextToken"] = page_token(start + size)
    return out


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _camel(key: str) -> str:
    return key[:1].lower() + key[1:]


def tags_of(tags) -> list[dict]:
    if tags is None:
        return []
    if not isinstance(tags, list) or len(tags) > 50:
        raise invalid("Tags must be a list of at most 50 {Key, Value} objects.")
    out = []
    for t in tags:
        if not isinstance(t, dict) or not isinstance(t.get("Key"), str) or not 1 <= len(t["Key"]) <= 128 \
                or not isinstance(t.get("Value", ""), str) or len(t.get("Value", "")) > 256:
            raise invalid(f"Invalid tag {t!r}: Key is 1-128 characters, Value up to 256.")
        out.append({"Key": t["Key"], "Value": t.get("Value", "")})
    return out


def tag_dict(tags: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags}


def timestamp(value, key: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    raise invalid(f"{key} must be a timestamp.")


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def token_offset(token) -> int:
    if token is None or token == "":
        return 0
    if not isinstance(token, str):
        raise invalid("Invalid pagination token.")
    try:
        kind, _, n = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "o" and int(n) >= 0:
            return int(n)
    except (ValueError, UnicodeDecodeError):
        pass
    raise invalid("Invalid pagination token.")
