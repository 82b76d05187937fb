"""Batch coding of whole datasets: plan, run on a local process pool or Ray, record a manifest."""

from semcodec.batch.jobs import Job, Manifest, plan_jobs, run_batch

__all__ = ["Job", "Manifest", "plan_jobs", "run_batch"]
