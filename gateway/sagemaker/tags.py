"""Tags on SageMaker resources: AddTags, ListTags, DeleteTags, by resource ARN.  An
endpoint's tags also go to the gateway's endpoint, since bills group costs by them."""
from __future__ import annotations

import re

from gateway.sagemaker.catalog import KINDS, Catalog
from gateway.sagemaker.shapes import invalid, page_token, tag_dict, tags_of, token_offset


class Tags:
    def __init__(self, catalog: Catalog, others: dict | None = None):
        """``others``: further taggable kinds of resource (``transform-job``) -> an object with
        ``find(lowercased name) -> (name, tags) | None`` and ``async set_tags(name, tags)``."""
        self.c = catalog
        self.others = others or {}

    def _resource(self, req: dict) -> tuple[str, str, list]:
        arn = req.get("ResourceArn")
        if not isinstance(arn, str):
            arn = ""
        kinds = "|".join(("model", "endpoint-config", "endpoint", *self.others))
        m = re.match(rf"^arn:aws[a-z-]*:sagemaker:{re.escape(self.c.region)}:{self.c.account_id}:"
                     rf"({kinds})/(.+)$", arn or "")
        if m is None:
            raise invalid(f"Invalid ResourceArn {arn!r}: expected an ARN of a model, endpoint config, endpoint"
                          f"{', '.join([''] + list(self.others))} in {self.c.region} of account {self.c.account_id}.")
        kind, lowered = m.group(1), m.group(2)
        if kind in self.others:
            found = self.others[kind].find(lowered)
            if found is None:
                raise invalid(f'Could not find {kind.replace("-", " ")} "{arn}".')
            return kind, found[0], found[1]
        table = {"model": self.c.models, "endpoint-config": self.c.configs}.get(kind)
        if table is not None:
            name = next((n for n in table if n.lower() == lowered), None)
            if name is None:
                raise invalid(f'Could not find {KINDS[kind]} "{arn}".')
            return kind, name, table[name]["Tags"]
        name = next((n for n in set(self.c.records) | set(self.c.endpoints.specs) if n.lower() == lowered), None)
        if name is None:
            raise invalid(f'Could not find endpoint "{arn}".')
        return kind, name, self.c.endpoint_record(name)["Tags"]

    async def _set_tags(self, kind: str, name: str, tags: list) -> None:
        if kind in self.others:
            await self.others[kind].set_tags(name, tags)
        elif kind == "endpoint":
            if name in self.c.records:
                self.c.records[name]["Tags"] = tags
                await self.c.save("endpoint", name, self.c.records[name])
            if name in self.c.endpoints.specs:                       # bills group costs by these
                await self.c.endpoints.set_tags(name, tag_dict(tags))
        else:
            table = self.c.models if kind == "model" else self.c.configs
            table[name]["Tags"] = tags
            await self.c.save(kind, name, table[name])

    async def add_tags(self, req: dict) -> dict:
        kind, name, tags = self._resource(req)
        new = tags_of(req.get("Tags"))
        merged = {t["Key"]: t["Value"] for t in tags}
        merged.update({t["Key"]: t["Value"] for t in new})
        if len(merged) > 50:
            raise invalid("A resource can have at most 50 tags.")
        await self._set_tags(kind, name, [{"Key": k, "Value": v} for k, v in merged.items()])
        return {"Tags": new}

    def list_tags(self, req: dict) -> dict:
        _, _, tags = self._resource(req)
        start = token_offset(req.get("NextToken"))
        size = req.get("MaxResults")
        size = 50 if size is None else size
        if not isinstance(size, int) or isinstance(size, bool) or size < 50:      # ListTagsMaxResults: min 50
            raise invalid(f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                          "constraint: Member must have value greater than or equal to 50")
        page = tags[start:start + size]
        out = {"Tags": page}
        if start + size < len(tags):
            out["NextToken"] = page_token(start + size)
        return out

    async def delete_tags(self, req: dict) -> dict:
        kind, name, tags = self._resource(req)
        keys = req.get("TagKeys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise invalid("1 validation error detected: Value at 'tagKeys' failed to satisfy constraint: "
                          "Member must have length greater than or equal to 1")
        await self._set_tags(kind, name, [t for t in tags if t["Key"] not in set(keys)])
        return {}
