# syntax=docker/dockerfile:1
# The one Spyglass image: docker-compose.yml's init, worker and simulator all run it (`spyglass ...`).
#
# `build` compiles the native event decoder (schemas/native, Rust) and builds Spyglass's wheel, then installs
# both with every dependency, pinned by constraints.txt, into the venv /opt/spyglass. The runtime stage copies
# only that venv (no compiler, no pip cache, no sources) and runs as the unprivileged user `spyglass`. Nothing
# is installed or compiled when a container starts. The Rust toolchain comes from the official rust image:
# Debian bookworm's cargo (1.63) cannot read the crate's Cargo.lock (format 4 needs cargo 1.78 or newer).
# The wheel and its installation are the same steps `tests/integration/test_wheel.py` runs without Docker.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUST_IMAGE=rust:1.95-slim

FROM ${RUST_IMAGE} AS rust

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY schemas/native schemas/native
# the native decoder first: its layer is rebuilt only when the crate changes
RUN CARGO_TARGET_DIR=/tmp/native pip wheel -q --no-deps -w /wheels ./schemas/native
COPY streams streams
COPY detectors detectors
COPY schemas schemas
COPY grafana/dashboards grafana/dashboards
COPY grafana/provisioning grafana/provisioning
RUN pip wheel -q --no-deps -w /wheels . \
 && python -m venv /opt/spyglass \
 && /opt/spyglass/bin/pip install -q -c constraints.txt /wheels/*.whl \
 && /opt/spyglass/bin/spyglass --help >/dev/null

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/spyglass --create-home spyglass
COPY --from=build /opt/spyglass /opt/spyglass
ENV PATH=/opt/spyglass/bin:$PATH PYTHONUNBUFFERED=1 SPYGLASS_STACK_DIR=/var/lib/spyglass/stack
USER 10001:10001
WORKDIR /var/lib/spyglass
ENTRYPOINT ["spyglass"]
CMD ["--help"]
