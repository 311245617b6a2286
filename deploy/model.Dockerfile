# The compose stack's one-shot model service (docker-compose.yml `model`): the package with
# the [train] extra, torch as a CPU build. The worker's image (../Dockerfile) has no torch.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# PyPI's Linux torch wheel pulls the CUDA libraries (gigabytes); the CPU index has the
# same version without them.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_app ./stream_app
COPY training ./training
RUN pip install '.[train]' \
    && useradd --system --uid 10001 --create-home fraudstream \
    && install -d -o fraudstream /models

USER fraudstream
ENTRYPOINT ["python", "-m", "training.provision"]
CMD ["--help"]
