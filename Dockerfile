# keyledger: build the one binary, then ship it alone.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keyledger ./cmd/keyledger \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyledger /usr/local/bin/keyledger
# Owned by the nonroot user, so that a volume mounted here is writable.
# docker-compose.yml mounts its keys at /secrets instead, from the host.
COPY --from=build --chown=65532:65532 /out/data /home/nonroot/data
WORKDIR /home/nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keyledger"]
CMD ["serve", "--http-addr", "0.0.0.0:8080"]
