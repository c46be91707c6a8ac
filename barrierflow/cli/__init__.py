"""The ``barrierflow`` command line: run workflows embedded or distributed, inspect and steer instances.

Entry point: ``barrierflow.cli.main:app`` (a typer app). Redis, Celery and the ``broker``/``workers`` packages
are imported only by the commands that need them, so ``barrierflow run`` in embedded mode needs neither.
"""
