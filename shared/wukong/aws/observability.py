"""Powertools for every handler: Logger with the job id and task key, Tracer for X-Ray, EMF Metrics.

Each invocation gets its own instances (``EphemeralMetrics`` shares nothing between them, and the
logger's keys are cleared per invocation), so nothing of one job leaks into the next warm one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = "wukong"
NAMESPACE = "Wukong"

Step = Callable[[dict, "Observability", Any], Any]


@dataclass
class Observability:
    function: str
    logger: Logger
    tracer: Tracer
    metrics: EphemeralMetrics

    @classmethod
    def create(cls, function: str) -> "Observability":
        service = os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE)
        # an explicit namespace would beat POWERTOOLS_METRICS_NAMESPACE, so pass one only as a fallback
        namespace = None if os.environ.get("POWERTOOLS_METRICS_NAMESPACE") else NAMESPACE
        return cls(function, Logger(service=service), Tracer(service=service),
                   EphemeralMetrics(namespace=namespace, service=service))

    @property
    def tracing(self) -> bool:
        return not self.tracer.disabled

    def span(self, name: str) -> AbstractContextManager:
        """An X-Ray subsegment (a dummy one when tracing is off)."""
        return self.tracer.provider.in_subsegment(f"## {name}")

    def count(self, name: str, value: float, unit: MetricUnit = MetricUnit.Count) -> None:
        if value:
            self.metrics.add_metric(name=name, unit=unit, value=value)


def run_handler(function: str, step: Step, event: dict, context: Any) -> Any:
    """Run one handler's ``step(event, obs, context)`` with Powertools around it; errors propagate
    (Step Functions catches them; Lambda retries asynchronous invokes)."""
    obs = Observability.create(function)

    @obs.logger.inject_lambda_context(clear_state=True)
    @obs.tracer.capture_lambda_handler(capture_response=False)
    @obs.metrics.log_metrics
    def entry(event: dict, context: Any) -> Any:
        obs.logger.append_keys(function=function)
        obs.count("Invocations", 1)  # never flush an empty metric set
        try:
            return step(event, obs, context)
        except Exception:
            obs.logger.exception(f"{function} failed")
            raise

    return entry(event, context)


def lambda_handler(function: str, step: Step) -> Callable[[dict, Any], Any]:
    """The Lambda entry point running ``step`` through :func:`run_handler`; holds no state itself."""

    def handler(event: dict, context: Any) -> Any:
        return run_handler(function, step, event, context)

    handler.__name__ = handler.__qualname__ = f"{function}_handler"
    return handler
