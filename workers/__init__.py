"""barrierflow's distributed mode: the Celery app, its task, and ``CeleryDispatcher`` (the coordinator's side).

``from barrierflow.workers import CeleryDispatcher, app``: ``app`` is the Celery app (the one ``celery -A barrierflow.workers.app
worker`` loads from the module ``barrierflow.workers.app``). It is bound here eagerly on purpose: importing the submodule
``barrierflow.workers.app`` sets the package attribute ``app`` to the *module*, so a lazy export would hand out the module
or the app depending on import order. Importing ``workers`` therefore imports Celery; the embedded engine
never imports ``workers``.
"""

from __future__ import annotations

from .app import app
from .dispatcher import CeleryDispatcher

__all__ = ["CeleryDispatcher", "app"]
