# bids_sclesion BIDS App image (CPU by default; --build-arg TORCH_VARIANT=cuda for GPUs).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN if [ "$TORCH_VARIANT" = cuda ]; then pip install "torch==${TORCH_VERSION}"; \
    else pip install --no-deps "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; fi
COPY . /src
RUN pip install "/src[test]"

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    OMP_NUM_THREADS=1 \
    HOME=/home/bids \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_SCLESION_CONTAINER_TYPE=docker
RUN useradd --create-home --home-dir /home/bids bids && chmod go=u -R /home/bids
USER bids
LABEL org.opencontainers.image.title="bids_sclesion" \
      org.opencontainers.image.description="Spinal cord MS lesion segmentation BIDS App" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["bids_sclesion"]
