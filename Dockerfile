# syntax=docker/dockerfile:1
# Multi-stage build: a static, non-root sessiongate on a distroless base.
# Stamp the build's identity into the binary (`sessiongate version`, the
# "sessiongate serving" log line) and the image labels; the build context
# has no .git (.dockerignore), so the Go toolchain cannot:
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t sessiongate:dev .
ARG VERSION=devel
ARG REVISION=

FROM golang:1.26-bookworm AS build
ARG VERSION
ARG REVISION
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w -X main.stampVersion=${VERSION} -X main.stampRevision=${REVISION}" -o /out/sessiongate ./cmd/sessiongate
# The state directory, owned by the image's user: a new volume mounted there
# starts with this ownership, so the non-root process can write to it.
RUN install -d -o 65532 -g 65532 -m 0700 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.title="sessiongate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/sessiongate /usr/local/bin/sessiongate
COPY --from=build --chown=65532:65532 /out/state /var/lib/sessiongate
# Example policies, so that the image starts as it is; mount your own over /etc/sessiongate/policies.
COPY envoy/examples/policies /etc/sessiongate/policies
USER 65532:65532
# The embedded store's state file lives here (see CMD): sessions and every
# session end survive a restart, a crash included, as long as this volume
# outlives the container. Give it a named volume or a persistent disk.
VOLUME /var/lib/sessiongate
EXPOSE 9001 9002
ENV SESSIONGATE_POLICIES=/etc/sessiongate/policies \
    SESSIONGATE_GRPC_ADDR=:9001 \
    SESSIONGATE_HTTP_ADDR=:9002
# No shell in the image: the binary checks its own gRPC health.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/sessiongate", "health", "--addr", "127.0.0.1:9001"]
ENTRYPOINT ["/usr/local/bin/sessiongate"]
# The embedded store with its state file: a signed-out session stays signed
# out across restarts (S3). With Redis (SESSIONGATE_STORE=redis://…) the same
# file is the replica's outage queue (docs/scale-out.md).
CMD ["serve", "--state-file", "/var/lib/sessiongate/state"]
