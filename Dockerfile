# spdist: one image for every role (api, worker, beat, flower, migrate); pick it by command.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The locked, hashed dependencies first (a layer that changes only with the lock), then
# spdist itself without re-resolving anything.
COPY requirements/main.txt ./requirements/main.txt
RUN pip install --require-hashes -r requirements/main.txt
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY api ./api
COPY migrations ./migrations
RUN pip install --no-deps . && useradd --system --uid 10001 --home-dir /app spdist

USER spdist
EXPOSE 8000 5555
ENTRYPOINT ["spdist"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
