# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on distroless, running as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=""
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/msads-syncer/syncer/internal/cli.Version=${VERSION} -X github.com/msads-syncer/syncer/internal/cli.Commit=${COMMIT}" \
      -o /out/syncer ./cmd/syncer

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/syncer /usr/local/bin/syncer
USER nonroot:nonroot
ENV SYNCER_CONFIG=/etc/syncer/config.yaml
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/syncer"]
CMD ["run"]
