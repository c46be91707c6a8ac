"""barrierflow's distributed mode: the Celery app, its configuration, its task, ``CeleryDispatcher`` (the
coordinator's side of a superstep on workers) and ``Coordinator`` (the service that runs the ``RunQueue``'s runs).

``from barrierflow.workers import CeleryDispatcher, app, configure``: ``app`` is the Celery app (the one ``celery
-A barrierflow.workers.app worker`` loads from the module ``barrierflow.workers.app``). It is bound here eagerly
on purpose: importing the submodule ``barrierflow.workers.app`` sets the package attribute ``app`` to the
*module*, so a lazy export would hand out the module or the app depending on import order. Importing
``workers`` therefore imports Celery; the embedded engine never imports ``workers``.

``configure(app, redis_url=..., prefix=..., broker_url=..., queue=...)`` sets what the environment would
(``Settings``); it wins over the environment whatever was imported first.
"""

from __future__ import annotations

from .app import app, configure, settings_of
from .config import Settings
from .coordinator import Coordinator
from .dispatcher import CeleryDispatcher

__all__ = ["CeleryDispatcher", "Coordinator", "Settings", "app", "configure", "settings_of"]
