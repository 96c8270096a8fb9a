# comfyui-auth: the ComfyUI image with the auth gateway as its entrypoint.
#
#   docker build -t comfyui-qwen:with-auth .
#
# The final stage is the deployment's own base image plus one static binary,
# so everything ComfyUI needs (Python, venv, CUDA libraries from the wheel) is
# unchanged. Both base images are build arguments so that CI, or an air-gapped
# builder, can use local copies.

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=python:3.11

FROM ${GO_IMAGE} AS build
# Only the Go module proxy is needed from the network. GOFLAGS=-mod=mod lets a
# build proceed when go.sum lags go.mod.
ARG GOPROXY=https://proxy.golang.org,direct
ARG GOFLAGS=
ENV GOPROXY=${GOPROXY} GOFLAGS=${GOFLAGS} CGO_ENABLED=0
WORKDIR /src
# Modules first, as their own layer: it is rebuilt only when go.mod or go.sum
# change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/comfyui-auth ./cmd/comfyui-auth \
 && /out/comfyui-auth version

FROM ${BASE_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="comfyui-qwen:with-auth" \
      org.opencontainers.image.description="ComfyUI behind the comfyui-auth gateway: bcrypt token and session auth in front of a loopback-only ComfyUI" \
      org.opencontainers.image.source="https://github.com/comfyui-auth/comfyui-auth" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/comfyui-auth /usr/local/bin/comfyui-auth
# The gateway's secrets live outside ComfyUI's folder, in root-only
# directories: the host's .secrets is mounted at /etc/comfyui-auth/secrets,
# and the gateway keeps its state (session key, revocations) in
# /var/lib/comfyui-auth. ComfyUI runs as an unprivileged user (COMFYUI_UID,
# 1000 by default) that cannot enter either; the entrypoint re-checks the
# modes at every start.
RUN mkdir -p /etc/comfyui-auth/secrets /var/lib/comfyui-auth \
 && chmod 0700 /etc/comfyui-auth /var/lib/comfyui-auth
# COMFYUI_AUTH_TOKEN_FILE is left unset: the entrypoint then uses
# /etc/comfyui-auth/secrets/qwen-api-user.token, or the old
# /workspace/ComfyUI/.secrets one (with a warning) when only that exists.
ENV COMFYUI_AUTH_STATE_DIR=/var/lib/comfyui-auth
WORKDIR /workspace/ComfyUI
# Only the gateway's port. ComfyUI listens on 127.0.0.1:8189 inside.
EXPOSE 8188
# /readyz is 200 once a valid hash is loaded and ComfyUI answers. ComfyUI's
# first start (venv, models) takes minutes, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=5 \
  CMD ["comfyui-auth", "healthcheck"]
# PID 1, as root: runs ComfyUI (the command, COMFYUI_COMMAND, or the default
# "venv/bin/python3 main.py ...", with "--listen 127.0.0.1 --port 8189"
# appended) as COMFYUI_UID, and the gateway as root on 0.0.0.0:8188; forwards
# signals and reaps zombies. Do not set USER: the entrypoint drops ComfyUI's
# privileges itself and needs root to do so.
ENTRYPOINT ["comfyui-auth", "entrypoint"]
