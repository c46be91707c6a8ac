# One image for every barrierflow service: Celery workers, coordinators, the HTTP API (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in a layer of their own: it is rebuilt only when pyproject.toml changes, not on every code edit.
COPY pyproject.toml ./
RUN python - <<'PY' > /tmp/requirements.txt && pip install -r /tmp/requirements.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
# the otel extra and an OTLP exporter: traces go to a collector when OTEL_EXPORTER_OTLP_ENDPOINT is set
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["otel"],
                 "opentelemetry-exporter-otlp-proto-http>=1.20"]))
PY

# The package itself (no dependencies left to fetch), then the examples, which run from /app, not installed.
COPY README.md ./
COPY barrierflow ./barrierflow
COPY engine ./engine
COPY broker ./broker
COPY workers ./workers
RUN pip install --no-deps .
COPY examples ./examples

# Celery warns loudly when a worker runs as root; nothing here needs root.
RUN useradd --create-home --uid 10001 barrierflow
USER barrierflow

CMD ["barrierflow", "--help"]
