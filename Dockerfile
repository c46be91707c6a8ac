# One image for every barrierflow service: the Celery workers and the coordinator (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them (the metadata changes rarely).
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY broker ./broker
COPY workers ./workers
COPY examples ./examples
COPY barrierflow_cli ./barrierflow_cli
RUN pip install .

# Celery warns loudly when a worker runs as root; nothing here needs root.
RUN useradd --create-home --uid 10001 barrierflow
USER barrierflow

CMD ["barrierflow", "--help"]
