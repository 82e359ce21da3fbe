# p2l-router: the OpenAI-compatible router with the P2L scorer on the GPU.
#
#   docker build -t p2l-router .
#   docker run --gpus all -p 8000:8000 -v p2l-data:/data --stop-timeout 130 \
#     -e OPENAI_API_KEY -e ANTHROPIC_API_KEY -e P2L_ROUTER_DEFAULT_KEY -e RESEARCH_KEY \
#     -e P2L_ROUTER_ADMIN_KEY p2l-router
#
# Every key variable a team file names must be set, or the router refuses to start (the
# shipped policies/ name P2L_ROUTER_DEFAULT_KEY and RESEARCH_KEY). On SIGTERM it lets
# requests and streams finish for --shutdown-grace-s (120 s), so give `docker stop` more
# than that (--stop-timeout / stop_grace_period) or lower the grace.
#
# The P2L checkpoint is downloaded from the Hugging Face hub on first start into the
# /data volume (HF_HOME=/data/hf), where the SQLite spend ledger lives too; mount a volume
# there so neither is lost with the container. For a local checkpoint, mount it and set
# P2L_ROUTER_P2L_MODEL=/path. Every `serve` flag has a P2L_ROUTER_<FLAG> variable.
#
# CUDA: the torch wheel from the PyTorch index brings its own CUDA user-space libraries
# (cuBLAS, cuDNN, ...) as pip dependencies, so the image only needs the NVIDIA "base"
# layer (the driver hooks for the NVIDIA container toolkit); the host driver must support
# the CUDA version of the wheel (12.8: driver >= 570, or a forward-compatible one).
# Build args pin torch; keep TORCH_VERSION in step with the Makefile's TORCH.

FROM nvidia/cuda:12.8.1-base-ubuntu22.04

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
# torch is already satisfied, so this adds only the router and its light dependencies.
RUN pip install . && python -c "import router.cli"

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
