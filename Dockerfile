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
    && useradd --system --uid 10001 --no-create-home fraudstream \
    && install -d -o fraudstream /var/lib/fraudstream

USER fraudstream
# A model bundle or model store is mounted here (see docker-compose.yml); none is baked in.
# /var/lib/fraudstream (owned by the fraudstream user) holds the console's audit log.
ENV FRAUDSTREAM_MODEL_DIR=/models
ENTRYPOINT ["fraudstream"]
CMD ["worker"]
