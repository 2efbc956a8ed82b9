# The container image that `randbench submit k8s … --image IMAGE` runs: each pod of the
# Indexed Job runs
#   /opt/randbench/bin/randbench run SUITE --shard $(JOB_COMPLETION_INDEX)/N --run-id ID \
#     --db postgres://… --out /tmp/randbench/shard-I --isolate process
# (the Job sets `command`, so the image sets no ENTRYPOINT).
#
# Build from the repository root and push where the cluster pulls from:
#   docker build -t REGISTRY/randbench:TAG .
#   docker push REGISTRY/randbench:TAG
# and check it where it was built:
#   docker run --rm REGISTRY/randbench:TAG randbench list
#
# What is in it, under /opt/randbench (also the working directory):
#   bin/randbench   built with `cargo build --release -p randbench --features tch,ort`
#   bench-suites/   the suites, found by name from the working directory
#   data/omniglot/  the vendored Omniglot sets (MIT), found from the working directory
#   native/         the native libraries the binary loads, taken from the pinned PyPI wheels
#                   that scripts/setup-native.sh installs (torch 2.11.0, onnxruntime 1.31.1):
#                   torch/lib (libtorch), nvidia/*/lib (the CUDA libraries libtorch links: the
#                   torch wheel on PyPI is built for CUDA 13, and libtorch_cuda is linked in
#                   even for CPU runs) and onnxruntime/capi (libonnxruntime, opened at run time)
#   reports/        writable by the image's user, for runs given no --out
# and Fashion-MNIST from Debian's dataset-fashion-mnist package, in
# /usr/share/datasets/fashion-mnist where randbench looks by default. The image is large
# (about 4 GB, nearly all of it libtorch and CUDA's libraries).
#
# Build arguments:
#   FEATURES=tch,ort     cargo features of the CPU build (candle is always in)
#   CUDA=1               instead, build with scripts/gpu-build.sh: every engine with CUDA
#                        (candle's kernels, libtorch's CUDA, ONNX Runtime's CUDA provider) for
#                        CUDA_COMPUTE_CAP (default 90: H100/H200); see docs/gpu.md. That binary
#                        needs the NVIDIA driver's libcuda.so.1 to start at all, so it runs on
#                        GPU nodes only (`submit k8s --gpu N`), and the smoke test is skipped.
#                        The features then come from scripts/env.sh (tch,ort), not FEATURES;
#                        ort-cuda still refuses, as the image has the CPU onnxruntime wheel.
#     docker build --build-arg CUDA=1 -t REGISTRY/randbench:TAG-cuda .
#   RUST_VERSION, DEBIAN the builder's rust:RUST_VERSION-DEBIAN image and the final
#                        debian:DEBIAN-slim (the same Debian release: the binary is linked
#                        against its glibc and libstdc++)
#
# The binary records no git commit: .git stays out of the build context (.dockerignore), and
# crates/harness/build.rs then leaves the commit unset rather than failing.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS builder
# scripts/setup-native.sh makes a venv with python3 and installs wheels with its pip.
RUN apt-get update \
 && apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The wheels (several GB, most of it CUDA's libraries) in a layer of their own, redone only
# when the script, and so its pins, change. No pip cache in the layer.
ENV PIP_NO_CACHE_DIR=1
COPY scripts/setup-native.sh scripts/
RUN bash scripts/setup-native.sh
# .cargo/config.toml points torch-sys at .venv/libtorch (LIBTORCH); crates/ort/build.rs finds
# libonnxruntime in .venv by itself.
COPY Cargo.toml Cargo.lock ./
COPY .cargo/ .cargo/
COPY crates/ crates/
COPY scripts/ scripts/
ARG FEATURES=tch,ort
ARG CUDA=0
ARG CUDA_COMPUTE_CAP=90
RUN set -eu; \
    if [ "$CUDA" = 1 ]; then \
      CUDA_COMPUTE_CAP="$CUDA_COMPUTE_CAP" bash scripts/gpu-build.sh; \
      bin=target/gpu/randbench; \
    else \
      cargo build --release --locked -p randbench --features "$FEATURES"; \
      bin=target/release/randbench; \
    fi; \
    install -D -m 0755 "$bin" /stage/opt/randbench/bin/randbench
# The libraries, at paths that name no Python version. torch's libraries find CUDA's by their
# RPATH $ORIGIN/../../nvidia/*/lib, so torch/ and nvidia/ keep their places side by side, as in
# site-packages (.venv/libtorch links to site-packages/torch). Whole lib directories, not a
# hand-picked list: libtorch_cuda alone needs a dozen of CUDA's libraries, and cuDNN and others
# open more of their own at run time; only the Python parts of the wheels stay behind.
ARG ORT_VERSION=1.31.1
RUN set -eu; \
    site=$(dirname "$(readlink -f .venv/libtorch)"); \
    native=/stage/opt/randbench/native; \
    mkdir -p "$native/torch" "$native/onnxruntime/capi"; \
    cp -a "$site/torch/lib" "$native/torch/"; \
    for lib in "$site"/nvidia/*/lib; do \
      rel=${lib#"$site"/}; \
      mkdir -p "$native/${rel%/lib}"; \
      cp -a "$lib" "$native/$rel"; \
    done; \
    cp -a "$site"/onnxruntime/capi/libonnxruntime*.so* "$native/onnxruntime/capi/"; \
    test -f "$native/torch/lib/libtorch_cpu.so"; \
    test -f "$native/nvidia/cu13/lib/libcudart.so.13"; \
    test -f "$native/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
      || { echo "no libonnxruntime.so.$ORT_VERSION: pass --build-arg ORT_VERSION= the version scripts/setup-native.sh pins" >&2; exit 1; }

FROM debian:${DEBIAN}-slim
# Fashion-MNIST, where randbench looks by default (/usr/share/datasets/fashion-mnist), as
# scripts/setup-data.sh installs it. Nothing else is needed from Debian: the history is reached
# over postgres:// without TLS, and nothing is downloaded at run time (no ca-certificates).
RUN apt-get update \
 && apt-get install -y -q --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin randbench
COPY --from=builder /stage/ /
COPY bench-suites/ /opt/randbench/bench-suites/
COPY data/omniglot/ /opt/randbench/data/omniglot/
RUN install -d -o 10001 -g 10001 /opt/randbench/reports
ARG ORT_VERSION=1.31.1
# The binary's rpath names the builder's .venv, and the path to libonnxruntime compiled into
# it too: both are pointed here instead. nvidia/cu13/lib is for the CUDA build's own links to
# cudart, cuBLAS, cuRAND and NVRTC (as docs/gpu.md and scripts/gpu-check.sh set it).
ENV PATH=/opt/randbench/bin:$PATH \
    LD_LIBRARY_PATH=/opt/randbench/native/torch/lib:/opt/randbench/native/nvidia/cu13/lib \
    ORT_DYLIB_PATH=/opt/randbench/native/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /opt/randbench
# Numeric, so that a pod's runAsNonRoot can check it.
USER 10001:10001
# Smoke test: the binary starts (every library resolves), finds its suites, and each engine
# built in works on the CPU (`list` probes each one in a child process, which opens libtorch
# and ONNX Runtime).
ARG FEATURES=tch,ort
ARG CUDA=0
RUN set -eu; \
    if [ "$CUDA" != 1 ]; then \
      randbench list > /tmp/list.txt || { cat /tmp/list.txt; exit 1; }; \
      cat /tmp/list.txt; \
      grep -Eq '^  quick +' /tmp/list.txt; \
      if grep -q 'does not load' /tmp/list.txt; then exit 1; fi; \
      for engine in candle $(echo "$FEATURES" | tr ',' ' '); do \
        grep -Eq "^  $engine-cpu +usable\$" /tmp/list.txt \
          || { echo "$engine-cpu is not usable in the image" >&2; exit 1; }; \
      done; \
      rm /tmp/list.txt; \
    fi
