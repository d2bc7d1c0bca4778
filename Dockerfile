# bids_sclesion BIDS App image.
#
#   docker build -t bids_sclesion:cpu .                                   # CPU PyTorch (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t bids_sclesion:cuda .   # CUDA PyTorch; run with --gpus all
#
# BASE_IMAGE must provide python3 (>= 3.10) with the venv module and useradd. Where no registry can be
# reached, scripts/build-image.sh makes a Debian base with debootstrap and builds with podman.
# Everything the app needs at run time, the models included, is inside the image: it never downloads.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Extras of the package to install: "validator" (BIDS validator); CI adds "test" to run the suite in the image.
ARG EXTRAS=validator
# A CA bundle for pip behind an intercepting proxy (a file bound at build time; not kept in the image).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Wheels put in docker/wheels/ win over the index (a local CPU torch makes the build work offline).
COPY docker/wheels/ /tmp/wheels/
RUN set -eux; \
    if [ "$TORCH_VARIANT" = cuda ]; then \
        pip install "torch==${TORCH_VERSION}"; \
    elif ls /tmp/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then \
        pip install --find-links /tmp/wheels "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}"; \
    fi; \
    python -c "import torch; assert ('+cpu' in torch.__version__) == ('$TORCH_VARIANT' == 'cpu'), torch.__version__"
COPY pyproject.toml README.md /src/
COPY bids_sclesion /src/bids_sclesion
RUN set -eux; \
    pip install --find-links /tmp/wheels "/src[${EXTRAS}]"; \
    python -c "import bids_sclesion.cli.run, bids_sclesion.model.io, ants, monai, nipype, bids, safetensors"; \
    python -m compileall -q /opt/venv >/dev/null || true

FROM ${BASE_IMAGE}
ARG TORCH_VARIANT=cpu
ARG VERSION=unknown
ARG REVISION=unknown
ARG BUILD_DATE=unknown
COPY --from=build /opt/venv /opt/venv
# HOME readable and writable by any user id: Singularity/Apptainer run as the calling user.
RUN useradd --create-home --home-dir /home/bids --uid 1000 --user-group bids && chmod -R go=u /home/bids
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/bids \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NIPYPE_NO_ET=1 \
    BIDS_SCLESION_CONTAINER_TYPE=docker \
    BIDS_SCLESION_CONTAINER_TAG=bids_sclesion:${VERSION}-${TORCH_VARIANT}
LABEL org.opencontainers.image.title="bids_sclesion" \
      org.opencontainers.image.description="Multiple-sclerosis lesion segmentation in the spinal cord, as a BIDS App (${TORCH_VARIANT} PyTorch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bids-sclesion/bids_sclesion" \
      org.opencontainers.image.documentation="https://github.com/bids-sclesion/bids_sclesion/tree/main/docs"
USER bids
WORKDIR /tmp
ENTRYPOINT ["bids_sclesion"]
