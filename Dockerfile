# Build: docker build -t tidings .   (Docker does not run on the build machines;
# this file is kept correct by reading.)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tidings ./cmd/tidings

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tidings /tidings
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/tidings"]
