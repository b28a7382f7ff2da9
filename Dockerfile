# The dispatcher image: `docker build -t bjet24/dispatcher .`
# Runs `dispatcher serve` (API, workers and /metrics) by default; `dispatcher api` and
# `dispatcher worker` run the roles apart. Expects DISPATCHER_DATABASE_URL.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 dispatcher \
    && useradd --system --uid 10001 --gid dispatcher --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin dispatcher \
    && mkdir -p /var/lib/dispatcher \
    && chown dispatcher:dispatcher /var/lib/dispatcher

WORKDIR /app

# Dependencies in their own layer: rebuilt only when pyproject.toml changes, not the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY migrations ./migrations
COPY dispatcher ./dispatcher
COPY api ./api
COPY run ./run
RUN pip install --no-cache-dir --no-deps .

ENV DISPATCHER_HOST=0.0.0.0 \
    DISPATCHER_PORT=8080 \
    DISPATCHER_METRICS_PORT=8081 \
    DISPATCHER_DATA_DIR=/var/lib/dispatcher \
    DISPATCHER_LOG_FORMAT=json

USER 10001:10001

# 8080: API, /healthz, /readyz, /metrics (serve, api); 8081: the same probes and /metrics of
# a worker-only process.
EXPOSE 8080 8081

# /healthz on the API port (an exception exits 1: unhealthy); a worker-only container
# overrides it with its metrics port (see deploy/compose.yaml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DISPATCHER_PORT', '8080') + '/healthz', timeout=3)"]

CMD ["dispatcher", "serve"]
