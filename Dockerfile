# One image for the operator (default command) and the injected sidecar (`carbontrack sidecar`).
# Build: docker build -t ghcr.io/carbontrack/carbontrack:0.1.0 .   (or `make image`)
# BASE is any Debian-like image with python3 (>= 3.11) and its venv module. Where no registry is
# reachable, `make image` builds FROM a Debian bookworm made locally by debootstrap (hack/images.py).
# No BuildKit-only syntax: the classic builder (DOCKER_BUILDKIT=0) needs no frontend image from a registry.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/carbontrack
WORKDIR /src
# Dependencies first, in their own layer: a code change does not download them again.
COPY pyproject.toml README.md ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && /opt/carbontrack/bin/pip install --no-cache-dir -r requirements.txt
COPY operator ./operator
RUN /opt/carbontrack/bin/pip install --no-cache-dir --no-deps . \
    && /opt/carbontrack/bin/python -m compileall -q /opt/carbontrack

FROM ${BASE}
RUN groupadd --gid 65532 carbontrack \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin carbontrack
COPY --from=build /opt/carbontrack /opt/carbontrack
# Byte code is compiled at build time; the root filesystem is read-only at run time.
ENV PATH=/opt/carbontrack/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["carbontrack"]
CMD ["operator"]
