# syntax=docker/dockerfile:1
# Multi-stage build: a static, non-root sessiongate on a distroless base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/sessiongate ./cmd/sessiongate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessiongate /usr/local/bin/sessiongate
# Example policies, so that the image starts as it is; mount your own over /etc/sessiongate/policies.
COPY envoy/examples/policies /etc/sessiongate/policies
USER 65532:65532
EXPOSE 9001 9002
ENV SESSIONGATE_POLICIES=/etc/sessiongate/policies \
    SESSIONGATE_GRPC_ADDR=:9001 \
    SESSIONGATE_HTTP_ADDR=:9002
# No shell in the image: the binary checks its own gRPC health.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/sessiongate", "health", "--addr", "127.0.0.1:9001"]
ENTRYPOINT ["/usr/local/bin/sessiongate"]
CMD ["serve"]
