# The fraudstream worker: serving dependencies only (onnxruntime, no torch).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_app ./stream_app
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home fraudstream

USER fraudstream
# Model bundles are mounted here (see docker-compose.yml); nothing is baked into the image.
ENV FRAUDSTREAM_MODEL_DIR=/models/current
ENTRYPOINT ["fraudstream"]
CMD ["worker"]
