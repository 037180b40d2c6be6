# syntax=docker/dockerfile:1
# The one Spyglass image: docker-compose.yml's init, worker and simulator all run it (`spyglass ...`).
#
# Two stages. `build` compiles the native event decoder (schemas/native, Rust, with Debian's cargo) and
# builds Spyglass's wheel, then installs both with every dependency, pinned by constraints.txt, into the
# venv /opt/spyglass. The runtime stage copies only that venv (no compiler, no pip cache, no sources) and
# runs as the unprivileged user `spyglass`. Nothing is installed or compiled when a container starts.
# The wheel and its installation are the same steps `tests/integration/test_wheel.py` runs without Docker.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends cargo \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONSTRAINT=/src/constraints.txt
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
