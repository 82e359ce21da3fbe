# p2l-router images, two targets:
#
#   gpu (the default, last stage): the router with the P2L scorer in process, on the GPU.
#   remote: a remote-scoring replica (`serve --scorer-url`, scoring on a vLLM engine): the
#           plain package, no torch and no CUDA (docker-compose.yaml builds the routers so).
#
#   docker build -t p2l-router .
#   docker build --target remote -t p2l-router:remote .
#   docker run --gpus all -p 8000:8000 -v p2l-data:/data --stop-timeout 130 \
#     -e OPENAI_API_KEY -e ANTHROPIC_API_KEY -e P2L_ROUTER_DEFAULT_KEY -e RESEARCH_KEY \
#     -e P2L_ROUTER_ADMIN_KEY p2l-router
#
# The remote image needs P2L_ROUTER_SCORER_URL (or --scorer-url) and P2L_ROUTER_P2L_MODEL
# naming the exported folder the engine serves, mounted into the container; without a
# scorer URL it stops at start, saying it would need the `local` extra.
#
# Every key variable a team file names must be set, or the router refuses to start (the
# shipped policies/ name P2L_ROUTER_DEFAULT_KEY and RESEARCH_KEY). On SIGTERM it lets
# requests and streams finish for --shutdown-grace-s (120 s), so give `docker stop` more
# than that (--stop-timeout / stop_grace_period) or lower the grace.
#
# gpu: the P2L checkpoint is downloaded from the Hugging Face hub on first start into the
# /data volume (HF_HOME=/data/hf), where the SQLite spend ledger lives too; mount a volume
# there so neither is lost with the container. For a local checkpoint, mount it and set
# P2L_ROUTER_P2L_MODEL=/path. Every `serve` flag has a P2L_ROUTER_<FLAG> variable.
#
# CUDA: the torch wheel from the PyTorch index brings its own CUDA user-space libraries
# (cuBLAS, cuDNN, ...) as pip dependencies, so the image only needs the NVIDIA "base"
# layer (the driver hooks for the NVIDIA container toolkit); the host driver must support
# the CUDA version of the wheel (12.8: driver >= 570, or a forward-compatible one).
# Build args pin torch; keep TORCH_VERSION in step with the Makefile's TORCH.

# ---------------------------------------------------------------- remote: no torch, no CUDA
FROM python:3.11-slim-bookworm AS remote

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router/ router/
# The plain package, no `local` extra (and the Redis client, for a shared ledger across
# replicas); the build fails if torch came in all the same.
RUN pip install "pip>=24.3" \
 && pip install "./[redis]" \
 && python -c "import importlib.util as u, router.cli; assert u.find_spec('torch') is None"

COPY providers.yaml ./
COPY policies/ policies/

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin router \
 && mkdir -p /data \
 && chown -R router:router /data
USER 10001

ENV P2L_ROUTER_LEDGER=sqlite:////data/p2l-router.db
VOLUME ["/data"]

EXPOSE 8000

# No weights to load: the router listens within seconds (readiness, /readyz, waits for
# the engine's probe). No curl in the image: Python's urllib does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
CMD ["p2l-router", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- gpu: the scorer in process
FROM nvidia/cuda:12.8.1-base-ubuntu22.04 AS gpu

ARG PYTHON=python3.11
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10). The PPA's package
# versions move under the same name; the base image tag is what pins the system.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends ${PYTHON} ${PYTHON}-venv \
 && apt-get purge -y --auto-remove software-properties-common gnupg \
 && rm -rf /var/lib/apt/lists/*

RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, pinned, from the CUDA index (a separate layer: it is the big one).
RUN pip install "pip>=24.3" \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router/ router/
# The `local` extra (the in-process scorer) and the Redis client; torch is already
# satisfied, so this adds only the router, accelerate and the light dependencies.
RUN pip install "./[local,redis]" && python -c "import router.cli, torch"

# Default configuration; mount your own over /app/providers.yaml and /app/policies.
COPY providers.yaml ./
COPY policies/ policies/

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin router \
 && mkdir -p /data/hf \
 && chown -R router:router /data
USER 10001

ENV HF_HOME=/data/hf \
    P2L_ROUTER_LEDGER=sqlite:////data/p2l-router.db
VOLUME ["/data"]

EXPOSE 8000

# `serve` loads the P2L model before it listens, and the first start downloads it (the
# 7B checkpoint is about 15 GB), hence the long start period. No curl in the image:
# Python's urllib does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
CMD ["p2l-router", "serve", "--host", "0.0.0.0", "--port", "8000"]
