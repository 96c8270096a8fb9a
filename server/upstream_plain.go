//go:build comfyui_auth_plain_transport

package server

// Built with -tags comfyui_auth_plain_transport, the gateway proxies
// everything through http.Transport: cmd/comfyui-auth-bench builds it to
// measure what the synchronous transport saves. Not for deployment.
const plainTransportBuild = true
