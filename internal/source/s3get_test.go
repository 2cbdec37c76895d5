package source

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// A body that sends a few bytes and then nothing ends at the idle
// timeout, one that trickles ends at its deadline, an answer whose
// headers never come at the idle timeout; all with ErrStalled.
func TestBoundedGetEndsStalledBodies(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "silent") { // not even the headers
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte(strings.Repeat("x", 10)))
		w.(http.Flusher).Flush()
		every := time.Hour
		if strings.HasSuffix(r.URL.Path, "trickle") {
			every = 50 * time.Millisecond
		}
		for {
			select {
			case <-release:
				return
			case <-r.Context().Done():
				return
			case <-time.After(every):
				if _, err := w.Write([]byte("x")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	}))
	defer srv.Close()
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: aws.AnonymousCredentials{}})
	for _, tc := range []struct{ key, want string }{
		{"idle", "limits.download_idle_timeout), after 10 bytes"},
		{"trickle", "not downloaded within"},
		{"silent", "limits.download_idle_timeout), after 0 bytes"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, body, err := boundedGet(context.Background(), client, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String(tc.key)},
				downloadBounds{idle: 300 * time.Millisecond, minRate: 1000}, -1)
			if err != nil {
				if tc.key == "silent" && errors.Is(err, ErrStalled) && strings.Contains(err.Error(), tc.want) {
					return
				}
				t.Fatal(err)
			}
			defer body.Close()
			_, err = io.Copy(io.Discard, body)
			if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("read: %v, want %q", err, tc.want)
			}
		})
	}
}
