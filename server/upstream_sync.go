//go:build !comfyui_auth_plain_transport

package server

const plainTransportBuild = false
