# syntax=docker/dockerfile:1
# Stubichat's images: one file, two final targets.
#   docker build --target main-backend -t stubichat-main-backend .
#   docker build --target llm-agent    -t stubichat-llm-agent .
# builder: a virtualenv holding the dependencies of pyproject.toml (cached until it changes).
# runtime: python:3.11-slim with that venv and a fixed non-root user; each target adds
# only its own source. No setting is baked in: all come from the environment at run time.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml ./
# Only the dependencies go into the venv: the services run from their source under /app,
# where main_backend finds alembic.ini and migrations/ beside its package (main_backend/app.py).
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && python -m venv /opt/venv
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install -r requirements.txt

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 stubichat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin stubichat
# The venv keeps its builder path: virtualenvs are not relocatable.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY stubichat_common/ stubichat_common/

FROM runtime AS llm-agent
COPY llm_agent/ llm_agent/
RUN python -m compileall -q llm_agent stubichat_common
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/health', timeout=4)"]
CMD ["uvicorn", "llm_agent.main:app", "--host", "0.0.0.0", "--port", "8001"]

FROM runtime AS main-backend
# /app/alembic.ini, /app/migrations and /app/main_backend: the layout of the repository, so
# `alembic upgrade head` (the migrate service) and the health check's migration head work.
COPY alembic.ini ./
COPY migrations/ migrations/
COPY main_backend/ main_backend/
# data/ is where the SQLite default (sqlite:///./data/stubichat.db) lives when no Postgres
# is configured; mount a volume there to keep it.
RUN python -m compileall -q main_backend migrations stubichat_common \
 && install -d -o 10001 -g 10001 /app/data
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# nginx in front sets X-Forwarded-For/-Proto; only the compose network reaches this port.
# On SIGTERM the app drains first (runs get SHUTDOWN_GRACE_SECONDS, then they and their
# streams are handed over; main_backend/shutdown.py), then passes the signal to uvicorn,
# which gives the last plain requests 5 s: all inside compose's 60 s stop_grace_period.
CMD ["uvicorn", "main_backend.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--forwarded-allow-ips", "*", "--timeout-graceful-shutdown", "5"]
