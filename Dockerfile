# syntax=docker/dockerfile:1
# The API and the worker in one image (docs/containers.md).
#   docker build -t a1111-async .                      the service (the last stage, the default)
#   docker build -t a1111-sim --target simulator .     the A1111 simulator, for demos (compose)
# Default command: API + worker under scripts/serve_all.py; `python wsgi.py` runs the API alone,
# `python -m worker_fn` the worker alone.

# --- dependencies, from the pinned requirement files, in a virtualenv copied into the runtime ---
FROM python:3.11.11-slim-bookworm AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements.txt requirements-server.txt /tmp/requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/requirements-server.txt

# --- the A1111 simulator (a test double) for `docker compose --profile demo` ---
FROM python:3.11.11-slim-bookworm AS simulator
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY requirements-dev.txt /tmp/requirements/
# its one dependency, at the version the tests use
RUN pip install --no-cache-dir "$(grep -oE '^pillow==[0-9.]+' /tmp/requirements/requirements-dev.txt)" \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY tests/__init__.py tests/
COPY tests/a1111_sim/ tests/a1111_sim/
COPY scripts/healthcheck.py scripts/
USER 10001:10001
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "http://127.0.0.1:7860/internal/ping"]
CMD ["python", "-m", "tests.a1111_sim", "--host", "0.0.0.0", "--port", "7860", "--gen-seconds", "3"]

# --- the service ---
FROM python:3.11.11-slim-bookworm AS runtime
# MALLOC_MMAP_THRESHOLD_: glibc gives a job's big buffers (A1111's answer, the images) back to the
# system when they are freed, so the worker's memory returns to idle between jobs (bench/worker_memory.py).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:///data/jobs.db
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY app.py wsgi.py ./
COPY chalicelib/ chalicelib/
COPY worker_fn/ worker_fn/
COPY scripts/serve_all.py scripts/healthcheck.py scripts/
# Our sources compiled at build time: with PYTHONDONTWRITEBYTECODE every start would compile them
# again (bench/cold_start.py: +0.3 x the floor on each cold start).
RUN python -m compileall -q app.py wsgi.py chalicelib worker_fn scripts
# data/: the SQLite database of the single-container deployment; mount a volume here.
RUN mkdir data && chown 10001:10001 data
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]
CMD ["python", "scripts/serve_all.py"]
