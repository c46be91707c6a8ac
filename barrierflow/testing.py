"""``barrierflow.testing``: pytest fixtures for testing your own workflows, with fakeredis and no worker process.

pytest loads this module as a plugin whenever barrierflow is installed (entry point ``pytest11``). The fixtures
need ``pip install 'barrierflow[testing]'`` (fakeredis with Lua, pytest, pytest-asyncio); without it pytest
still runs, and only a test that uses one of them fails, saying what to install.

``barrierflow_store``
    A ``RedisStore`` on fakeredis, new and empty for each test: the real Lua scripts, leases, fencing and
    checkpoint layout, in memory.
``barrierflow_dispatcher``
    A ``CeleryDispatcher`` whose tasks run in this process through a Celery worker's code, over the
    ``barrierflow_store``'s fakeredis (``barrierflow.workers.in_process``): every superstep's messages and
    state are encoded and decoded exactly as between a coordinator and a worker, and the workflow is found by
    its registered name. A message or state that could not travel to a Celery worker fails your test, not
    production. Build with both::

        wf = my_flow().build(store=barrierflow_store, dispatcher=barrierflow_dispatcher)

Outside pytest, ``fake_redis_store()`` and ``barrierflow.workers.in_process.InProcessCeleryDispatcher`` do the
same. This module imports nothing beyond pytest until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from barrierflow.broker import RedisStore
    from barrierflow.workers.in_process import InProcessCeleryDispatcher

INSTALL_HINT = "barrierflow's test fixtures need fakeredis with Lua: pip install 'barrierflow[testing]'"


def fake_redis_store(*, prefix: str = "barrierflow", server: Any = None, **options: Any) -> RedisStore:
    """A ``RedisStore`` on a fakeredis server (a new one unless given); ``options`` are ``RedisStore``'s."""
    try:
        import fakeredis
        import lupa  # noqa: F401 - fakeredis runs the store's Lua scripts with it
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    from barrierflow.broker import RedisStore

    client = fakeredis.FakeAsyncRedis(server=server if server is not None else fakeredis.FakeServer())
    return RedisStore(client, prefix=prefix, **options)


@pytest.fixture
def barrierflow_store() -> RedisStore:
    """A fakeredis-backed ``RedisStore``, empty for each test."""
    try:
        return fake_redis_store()
    except ImportError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def barrierflow_dispatcher(barrierflow_store: RedisStore) -> Iterator[InProcessCeleryDispatcher]:
    """Runs supersteps through a Celery worker's code in this process, over ``barrierflow_store``."""
    from barrierflow.workers.in_process import InProcessCeleryDispatcher

    dispatcher = InProcessCeleryDispatcher(barrierflow_store)
    yield dispatcher
    dispatcher.close()
