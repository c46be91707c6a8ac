"""``barrierflow.workers.configure``: settings given in code win over the environment, whatever was imported first.

Each check runs in a fresh interpreter whose environment names other settings, and imports the app (so it is
configured from that environment) before configuring it in code. (The CLI's side, a real worker and coordinator
whose flags override a dead Redis in their environment, is ``tests/cli/test_cli_distributed.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from barrierflow.workers import Settings

ENV = {
    "BARRIERFLOW_REDIS_URL": "redis://env-host:6001/1",
    "BARRIERFLOW_PREFIX": "env-prefix",
    "BARRIERFLOW_QUEUE": "env-queue",
    "BARRIERFLOW_IMPORTS": "",
}


def in_fresh_process(code: str, env: dict[str, str]) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BARRIERFLOW_", "CELERY_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


WHAT_IS_USED = """
def used(app):
    from barrierflow.workers import CeleryDispatcher

    dispatcher = CeleryDispatcher(app)
    with app.producer_or_acquire() as producer:  # what a send would go through
        producer_uri = producer.connection.as_uri()
    return {
        "broker": app.conf.broker_url,
        "pool": app.pool.connection.as_uri(),
        "producer": producer_uri,
        "redis": app.conf.barrierflow_redis_url,
        "prefix": app.conf.barrierflow_prefix,
        "queue": app.amqp.default_queue.name,
        "dispatcher": [dispatcher._url, dispatcher.prefix, dispatcher.queue],
    }
"""


def test_code_wins_over_the_environment_of_an_app_already_imported_and_used() -> None:
    seen = in_fresh_process(
        WHAT_IS_USED
        + """
import json
from barrierflow.workers import app, configure

before = used(app)  # the app has read the environment and built its pools
configure(app, redis_url="redis://code-host:6002/2", prefix="code-prefix", queue="code-queue")
print(json.dumps({"before": before, "after": used(app)}))
""",
        ENV,
    )
    before, after = seen["before"], seen["after"]
    assert before["broker"] == before["redis"] == "redis://env-host:6001/1"
    assert "env-host:6001" in before["pool"] and "env-host:6001" in before["producer"]
    assert after["broker"] == after["redis"] == "redis://code-host:6002/2"  # the broker follows the Redis URL
    assert "code-host:6002" in after["pool"] and "code-host:6002" in after["producer"]
    assert after["prefix"] == "code-prefix"
    assert after["queue"] == "code-queue"
    assert after["dispatcher"] == ["redis://code-host:6002/2", "code-prefix", "code-queue"]


def test_configuring_the_same_broker_again_after_a_send_still_sends() -> None:
    """The app's pool is kombu's process-wide pool of that broker: closed by ``configure``, it must leave
    kombu's registry too, or the next send gets it back closed ("Acquire on closed pool")."""
    seen = in_fresh_process(
        WHAT_IS_USED
        + """
import json
from barrierflow.workers import app, configure

first = used(app)  # builds the pools of env-host
configure(app, prefix="another-prefix")  # same broker
print(json.dumps({"first": first, "again": used(app), "closed": app.pool._closed}))
""",
        ENV,
    )
    assert seen["again"]["producer"] == seen["first"]["producer"]
    assert seen["again"]["prefix"] == "another-prefix" and seen["closed"] is False


def test_later_calls_change_only_what_they_name_and_an_explicit_broker_stays() -> None:
    seen = in_fresh_process(
        """
import json
from barrierflow.workers import app, configure, settings_of

configure(app, prefix="p1")
first = settings_of(app)
configure(app, redis_url="redis://r2:1/0")
second = settings_of(app)
print(json.dumps({"first": [first.redis_url, first.broker, first.prefix],
                  "second": [second.redis_url, second.broker, second.prefix, app.conf.broker_url]}))
""",
        {**ENV, "BARRIERFLOW_BROKER_URL": "redis://broker-host:6003/0"},
    )
    assert seen["first"] == ["redis://env-host:6001/1", "redis://broker-host:6003/0", "p1"]
    # A broker set explicitly (here by the environment) is not moved by a new Redis URL.
    assert seen["second"] == [
        "redis://r2:1/0",
        "redis://broker-host:6003/0",
        "p1",
        "redis://broker-host:6003/0",
    ]


def test_settings_replace_ignores_options_not_given_and_refuses_unknown_ones() -> None:
    base = Settings.from_env({"BARRIERFLOW_REDIS_URL": "redis://a:1/0", "BARRIERFLOW_IMPORTS": "m1, m2"})
    assert base.imports == ("m1", "m2")
    assert base.broker == "redis://a:1/0"
    changed = base.replace(redis_url=None, prefix="p", imports="x,y")
    assert (changed.redis_url, changed.prefix, changed.imports) == ("redis://a:1/0", "p", ("x", "y"))
    assert base.replace(imports=["z"]).imports == ("z",)
    with pytest.raises(TypeError, match="unknown barrierflow worker setting"):
        base.replace(redis="redis://typo")
