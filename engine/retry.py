"""Retries and timeouts of one delivery: ``RetryPolicy``, and the policy an executor ends up with.

A delivery whose handler fails with a retryable error is tried again after a backoff, inside the superstep and
where it runs (this process, or the Celery worker that took its task), so the barrier simply waits for it. A
failed attempt leaves no trace: the next attempt starts from the view the failed one started from, and only the
last attempt's effects reach the barrier.

Why the backoff has jitter: deliveries of a wide superstep that fail together (a dependency went down) would
otherwise retry together, hitting the recovering dependency at the same instants.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import WorkflowValidationError

#: What an executor's ``retry`` / ``timeout`` is when it sets none: the builder's default applies.
INHERIT: Any = type("Inherit", (), {"__repr__": lambda self: "INHERIT", "__slots__": ()})()


def _exception_types(value: Any, name: str) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple | list) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"RetryPolicy {name} takes exception classes, not {kind!r}")
    return tuple(types)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how soon a failed delivery is tried again.

    ``max_attempts`` counts every attempt (1 = never retry). The delay before attempt n+1 is
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` seconds; with ``jitter`` a random delay
    between half of that and all of it. An error is retried when it is an instance of one of ``retry_on`` and
    of none of ``give_up_on`` (``give_up_on`` wins). A timed-out attempt fails with ``TimeoutError``.
    """

    max_attempts: int = 3
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ValueError(f"RetryPolicy max_attempts must be a positive int, not {self.max_attempts!r}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RetryPolicy {name} must be finite seconds >= 0, not {value!r}")
        if (
            not isinstance(self.multiplier, int | float)
            or not math.isfinite(self.multiplier)
            or self.multiplier < 1
        ):
            raise ValueError(f"RetryPolicy multiplier must be >= 1, not {self.multiplier!r}")
        object.__setattr__(self, "retry_on", _exception_types(self.retry_on, "retry_on"))
        object.__setattr__(self, "give_up_on", _exception_types(self.give_up_on, "give_up_on"))

    def retries(self, error: BaseException) -> bool:
        """Whether this kind of error is tried again (attempts left aside)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.give_up_on)

    def backoff(self, attempt: int) -> float:
        """The delay before attempt ``attempt + 1`` (after attempt ``attempt`` failed), without jitter."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))

    def delay_after(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before trying again after attempt ``attempt`` failed with ``error``; ``None``: give up."""
        if attempt >= self.max_attempts or not self.retries(error):
            return None
        delay = self.backoff(attempt)
        return delay * (0.5 + random.random() / 2) if self.jitter else delay


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """What applies to each delivery of one executor: its retries and its per-attempt timeout."""

    retry: RetryPolicy | None
    timeout: float | None


def check_timeout(value: Any, owner: str) -> None:
    if value is None or value is INHERIT:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise WorkflowValidationError(f"{owner}: timeout must be positive seconds or None, not {value!r}")


def check_retry(value: Any, owner: str) -> None:
    if value is not None and value is not INHERIT and not isinstance(value, RetryPolicy):
        raise WorkflowValidationError(f"{owner}: retry must be a RetryPolicy or None, not {value!r}")


def resolve(
    executor_retry: Any, executor_timeout: Any, default_retry: Any, default_timeout: Any
) -> DeliveryPolicy | None:
    """The executor's own settings, else the builder's; ``None`` when neither retries nor times out."""
    retry = default_retry if executor_retry is INHERIT else executor_retry
    timeout = default_timeout if executor_timeout is INHERIT else executor_timeout
    if (retry is None or retry.max_attempts == 1) and timeout is None:
        return None
    return DeliveryPolicy(retry if retry is not None and retry.max_attempts > 1 else None, timeout)
