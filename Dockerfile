# syntax=docker/dockerfile:1
# One image for the operator (default command) and the injected sidecar (`carbontrack sidecar`).
# Build: docker build -t ghcr.io/carbontrack/carbontrack:0.1.0 .
# (This repository's CI machine has no Docker engine, so the image build is not exercised there.)

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Wheels for the package and every dependency; nothing is compiled (all have manylinux wheels).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ARG VERSION=0.1.0
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin carbontrack
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "carbontrack==${VERSION}" \
    && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["carbontrack"]
CMD ["operator"]
