# bakelite container image: the daemon as a sidecar, and the one-shot commands (restore on boot,
# verify as a scheduled job). Two stages: build a virtualenv with Debian's Python 3.11, then copy it
# into a distroless runtime with the same Python and no shell, package manager or compilers.
#
#   docker build -t bakelite .
#   docker run --rm -v /etc/bakelite:/etc/bakelite:ro -v /var/lib/app:/var/lib/app bakelite
#
# The health check uses the exec form: there is no /bin/sh in the runtime image.

FROM debian:12-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Every storage SDK is included so one image serves every backend.
RUN python3 -m venv /opt/bakelite \
    && /opt/bakelite/bin/pip install --no-cache-dir --no-compile ".[s3,gcs,azure,sftp]" \
    && /opt/bakelite/bin/python -m compileall -q /opt/bakelite/lib \
    && /opt/bakelite/bin/pip uninstall -y pip

# Debian 12's Python 3.11, matching the build stage, so the venv's /usr/bin/python3 link resolves.
FROM gcr.io/distroless/python3-debian12:nonroot
COPY --from=build /opt/bakelite /opt/bakelite
ENV PATH=/opt/bakelite/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONUNBUFFERED=1
# The distroless "nonroot" user (uid 65532). Give it the database directory, or run the
# container with --user set to the uid that owns the database.
USER 65532:65532
ENTRYPOINT ["bakelite"]
CMD ["daemon", "--config", "/etc/bakelite/bakelite.toml"]
# Liveness only: thresholds (--max-lag, --max-verify-age) belong in a readiness check or an alert,
# since restarting the container cannot fix a slow backend.
HEALTHCHECK --interval=5m --timeout=10s --start-period=2m \
    CMD ["bakelite", "status", "--check", "--config", "/etc/bakelite/bakelite.toml"]
