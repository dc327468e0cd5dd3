# One image for producer, workers and Flower. Build with --build-arg EXTRAS=worker,monitor.
FROM python:3.11-slim
ARG EXTRAS=worker,monitor
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY models models
COPY producer producer
COPY worker worker
COPY devkit devkit
COPY migrations migrations
RUN pip install --no-cache-dir ".[${EXTRAS}]"
# The adapter registry. A named volume mounted here starts with this folder's owner, so the
# training worker, running as `triplets`, can write adapters into it.
RUN useradd --create-home triplets \
    && mkdir /adapters \
    && chown triplets:triplets /adapters
ENV TRIPLETS_ADAPTER_REGISTRY=/adapters
USER triplets
ENTRYPOINT ["triplets"]
