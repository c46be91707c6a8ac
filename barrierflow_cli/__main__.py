"""``python -m barrierflow_cli``: the same as the ``barrierflow`` script."""

from barrierflow_cli.main import app

app(prog_name="barrierflow")
