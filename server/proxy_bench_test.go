package server

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxySmallGET is one authenticated /system_stats through the
// whole gateway (access log, auth, proxy) over loopback, for profiling the
// per-request cost: go test -run X -bench ProxySmallGET -cpuprofile cpu.out ./server
func BenchmarkProxySmallGET(b *testing.B) {
	for _, kind := range []string{"hash-token", "raw-token"} {
		b.Run(kind, func(b *testing.B) {
			g := startGateway(b, gatewayOpts{discardLogs: true})
			tok := seedHash
			if kind == "raw-token" {
				tok = seedToken
			}
			client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}
			req, _ := http.NewRequest(http.MethodGet, g.URL+"/system_stats", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := req.Clone(req.Context())
				for pb.Next() {
					resp, err := client.Do(r)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}
