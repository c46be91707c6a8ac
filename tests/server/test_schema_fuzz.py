"""schemathesis against ``/openapi.json``: whatever it sends, the API never answers 500, and every answer
matches the schema (status code documented, content type, body). Bounded: a few examples per operation.

The event streams are left out: a valid instance id would stream forever (their bad-input answers are tested
in ``test_sse.py``). schemathesis calls the app in process (Starlette's test client, its own event loop).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import tests.server.flows  # noqa: F401 - the app offers these workflows
from barrierflow.broker import RedisStore
from barrierflow.server import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Examples per operation (13 operations): the whole test stays well under a minute.
EXAMPLES = 60


def test_no_input_gives_a_500_and_every_answer_matches_the_schema(
    redis_url: str, real_redis_prefix: str
) -> None:
    store = RedisStore.from_url(redis_url, prefix=real_redis_prefix)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(store))
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if not op.path.endswith("/events")]
    assert len(fuzzed) == 11, [op.label for op in fuzzed]
    for operation in fuzzed:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        fuzz()
