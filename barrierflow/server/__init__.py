"""``barrierflow.server``: the HTTP API (and the run inspector page) on top of the run queue (DESIGN §5).

``create_app(store=None, runs=None, token=None)`` returns the ASGI app ``barrierflow serve`` runs with uvicorn.
Importing this package imports FastAPI; the ``barrierflow`` facade never does.
"""

from .app import create_app

__all__ = ["create_app"]
