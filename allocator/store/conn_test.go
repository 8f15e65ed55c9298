package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/porttest"
	"canhazgpu/internal/redistest"
)

// exercise registers two GPUs and makes one grant through conn.
func exercise(t *testing.T, conn Conn) error {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, conn, "conn", Options{})
	require.NoError(t, err)
	defer s.Close()
	if _, err := s.Register(ctx, fakeGPUs(2), false); err != nil {
		return err
	}
	_, err = s.Allocate(ctx, manual("alice", 1))
	return err
}

func TestPasswordFromFile(t *testing.T) {
	own, err := redistest.Start(redistest.Options{Args: []string{"--requirepass", "s3cret-pw"}})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	pwFile := filepath.Join(t.TempDir(), "redis.pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("s3cret-pw\n"), 0o600))

	require.NoError(t, exercise(t, Conn{URL: own.URL(), PasswordFile: pwFile, DialTimeout: time.Second, OpTimeout: time.Second}))
	err = exercise(t, Conn{URL: own.URL(), DialTimeout: time.Second, OpTimeout: time.Second})
	require.Error(t, err, "no password: refused")
	require.ErrorContains(t, err, own.URL(), "the error names the server")

	_, err = Open(context.Background(), Conn{URL: own.URL(), PasswordFile: filepath.Join(t.TempDir(), "missing")}, "conn", Options{})
	require.ErrorContains(t, err, "redis password file")
}

func TestTLSWithCAFile(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestPKI(t, dir)
	port, err := porttest.Free(0)
	require.NoError(t, err)
	own, err := redistest.Start(redistest.Options{Args: []string{
		"--tls-port", fmt.Sprint(port), "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "no"}})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	url := fmt.Sprintf("rediss://127.0.0.1:%d/0", port)
	require.NoError(t, exercise(t, Conn{URL: url, TLSCAFile: ca, DialTimeout: time.Second, OpTimeout: time.Second}))

	err = exercise(t, Conn{URL: url, DialTimeout: time.Second, OpTimeout: time.Second})
	require.ErrorIs(t, err, allocator.ErrUnavailable, "an unknown CA fails the handshake")
}

func TestSentinel(t *testing.T) {
	master, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(master.Stop)
	sentinel, err := redistest.StartSentinel("gpus", master.Addr())
	require.NoError(t, err)
	t.Cleanup(sentinel.Stop)
	require.NoError(t, exercise(t, Conn{SentinelMaster: "gpus", SentinelAddrs: []string{sentinel.Addr()},
		DialTimeout: time.Second, OpTimeout: time.Second}))
	c := master.Client()
	defer c.Close()
	n, err := c.HLen(context.Background(), keysFor("conn").res).Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the grant reached the master the sentinel named")

	_, err = Dial(Conn{SentinelMaster: "gpus"})
	require.ErrorContains(t, err, "no sentinel_addrs")
}

func TestBadURLNamesIt(t *testing.T) {
	_, err := Dial(Conn{URL: "http://user:pw@example:6379"})
	require.ErrorContains(t, err, `redis url "http://user:***@example:6379"`)
	require.NotContains(t, err.Error(), ":pw@", "the password is never printed")
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	require.NoError(t, err)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}
