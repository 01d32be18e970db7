"""SageMaker batch transform: CreateTransformJob, DescribeTransformJob, ListTransformJobs and
StopTransformJob over ``batch.jobs.TransformJobs`` (which runs the jobs)."""
from __future__ import annotations

from gateway.batch.jobs import TransformJobs
from gateway.batch.spec import check_status
from gateway.sagemaker.shapes import check_name, list_page


class TransformJobsApi:
    def __init__(self, jobs: TransformJobs):
        self.jobs = jobs

    def operations(self) -> dict:
        return {"CreateTransformJob": self.create, "DescribeTransformJob": self.describe,
                "ListTransformJobs": self.list, "StopTransformJob": self.stop}

    async def create(self, req: dict) -> dict:
        return await self.jobs.create(req)

    async def describe(self, req: dict) -> dict:
        return await self.jobs.describe(check_name(req, "TransformJobName"))

    async def stop(self, req: dict) -> dict:
        await self.jobs.stop(check_name(req, "TransformJobName"))
        return {}

    async def list(self, req: dict) -> dict:
        status = check_status(req.get("StatusEquals"))
        docs = await self.jobs.summaries()
        if status:
            docs = [d for d in docs if d["TransformJobStatus"] == status]
        return list_page(req, docs, "TransformJobName", "TransformJobSummaries", lambda d: d,
                         ("Name", "CreationTime", "Status"), status_key="TransformJobStatus", modified=True)
