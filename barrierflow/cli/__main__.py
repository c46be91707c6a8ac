"""``python -m barrierflow.cli``: the same as the ``barrierflow`` script."""

from barrierflow.cli.main import app

app(prog_name="barrierflow")
