"""Jobs as a service: one :class:`JobService` interface (submit, status, result, list, cancel), run
in-process on a LocalCluster, served over HTTP by ``wukong serve``, or reached over HTTP by clients.

The HTTP server needs the ``server`` extra (FastAPI, uvicorn); the client needs only the base install.
"""

from wukong.service.base import JobHandle, JobService
from wukong.service.models import JobConfig, JobError, JobState, JobStatus

__all__ = ["JobConfig", "JobError", "JobHandle", "JobService", "JobState", "JobStatus"]
