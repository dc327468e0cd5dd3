# One image for producer, workers and Flower. Build with --build-arg EXTRAS=worker,monitor.
FROM python:3.11-slim
ARG EXTRAS=worker,monitor
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY models models
COPY producer producer
COPY worker worker
COPY migrations migrations
RUN pip install --no-cache-dir ".[${EXTRAS}]"
RUN useradd --create-home triplets
USER triplets
ENTRYPOINT ["triplets"]
