package main

// kube-apiserver, configured through its own flag set exactly as the real binary would be, so the
// flags below read like a kube-apiserver command line.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

func init() {
	// The apiserver and the controller manager both apply logging options in one process.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
}

func apiServerFlags(s settings, certs pki) []string {
	return []string{
		"--etcd-servers=" + etcdEndpoint(s.etcdClientPort),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.securePort),
		// A loopback advertise address is only accepted without an endpoint reconciler; without
		// an advertise address startup fails on a host that has no default route.
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + certs.ServingCert(),
		"--tls-private-key-file=" + certs.ServingKey(),
		"--client-ca-file=" + certs.CACert(),
		// RBAC for real, so the chart's Roles are tested as a cluster would enforce them.
		"--authorization-mode=RBAC",
		// Issuer and signing key install the TokenRequest API (serviceaccounts/token).
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + certs.SAPub(),
		"--service-account-signing-key-file=" + certs.SAKey(),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// Without the PVC-protection controller this plugin's finalizer would keep every deleted
		// PVC (and so its namespace) terminating forever.
		"--disable-admission-plugins=StorageObjectInUseProtection",
		"--profiling=false",
	}
}

func runAPIServer(ctx context.Context, args []string) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	registry := s.GenericServerRunOptions.ComponentGlobalsRegistry
	if err := registry.Set(); err != nil {
		return err
	}
	// The loopback clients would otherwise log warnings about their own requests.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := logsapi.ValidateAndApply(s.Logs, registry.FeatureGateFor(basecompatibility.DefaultKubeComponent)); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return app.Run(ctx, completed)
}

// waitReady polls /readyz with the admin certificate until it answers "ok".
func waitReady(ctx context.Context, server string, certs pki) error {
	client, err := adminHTTPClient(certs)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "ok" {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("apiserver /readyz not ok within 3m; last answer: %s", last)
}

func adminHTTPClient(certs pki) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(certs.AdminCert(), certs.AdminKey())
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(certs.CACert())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{pair},
			MinVersion:   tls.VersionTLS12,
		}},
	}, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
