package main

import (
	"slices"
	"testing"
)

func TestParseArgsTakesComfyUIFlagsAndIgnoresTheRest(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantListen []string
		wantPort   int
		wantMax    int64
		wantErr    bool
	}{
		{"defaults", nil, []string{"127.0.0.1"}, 8188, 0, false},
		{"listen and port", []string{"--listen", "0.0.0.0", "--port", "8189"}, []string{"0.0.0.0"}, 8189, 0, false},
		{"bare listen means all interfaces", []string{"--listen", "--port", "1"}, []string{"0.0.0.0", "::"}, 1, 0, false},
		{"equals form", []string{"--listen=127.0.0.2,127.0.0.3", "--port=0"}, []string{"127.0.0.2", "127.0.0.3"}, 0, 0, false},
		{"unknown flags with and without values", []string{
			"--preview-method", "auto", "--use-split-cross-attention", "--enable-cors-header",
			"--cuda-device", "0", "--port", "9000", "--fast",
		}, []string{"127.0.0.1"}, 9000, 0, false},
		{"max upload size in MB", []string{"--max-upload-size", "2"}, []string{"127.0.0.1"}, 8188, 2 << 20, false},
		{"bad port", []string{"--port", "http"}, nil, 0, 0, true},
		{"--multi-user is a switch", []string{"--multi-user", "--port", "7"}, []string{"127.0.0.1"}, 7, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseArgs(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if cfg.multiUser != slices.Contains(tt.args, "--multi-user") {
				t.Fatalf("multiUser %v for %v", cfg.multiUser, tt.args)
			}
			if !slices.Equal(cfg.listen, tt.wantListen) || cfg.port != tt.wantPort || cfg.maxUploadSize != tt.wantMax {
				t.Fatalf("got listen %v port %d max %d, want %v %d %d", cfg.listen, cfg.port, cfg.maxUploadSize, tt.wantListen, tt.wantPort, tt.wantMax)
			}
		})
	}
}
