# Build: docker build -t tidings .   (Docker does not run on the build machines;
# this file is kept correct by reading.)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tidings ./cmd/tidings
# The worker's audit checkpoint folder: a volume mounted there starts owned by nonroot.
RUN mkdir -p /out/audit-checkpoints

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tidings /tidings
COPY --from=build --chown=nonroot:nonroot /out/audit-checkpoints /audit-checkpoints
USER nonroot:nonroot
EXPOSE 8080 9091
ENTRYPOINT ["/tidings"]
