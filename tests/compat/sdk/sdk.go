// The client MinIO uses — kms-go's kes package — calling every method of kes.Client
// against one server. It prints one JSON line per call: the call, what came back
// (random parts reduced to their shape) and the error, with the kes.Err* value it
// is, so that two servers' transcripts can be compared line by line.
//
//	sdk ENDPOINT ADMIN.cert ADMIN.key APP.cert APP.key
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/minio/kms-go/kes"
)

var sentinels = map[string]error{
	"ErrNotAllowed":       kes.ErrNotAllowed,
	"ErrKeyNotFound":      kes.ErrKeyNotFound,
	"ErrKeyExists":        kes.ErrKeyExists,
	"ErrPolicyNotFound":   kes.ErrPolicyNotFound,
	"ErrIdentityNotFound": kes.ErrIdentityNotFound,
	"ErrDecrypt":          kes.ErrDecrypt,
}

func emit(call string, result any, err error) {
	line := map[string]any{"call": call, "result": result}
	if err != nil {
		line["error"] = err.Error()
		for name, s := range sentinels {
			if errors.Is(err, s) {
				line["is"] = name
			}
		}
		var e kes.Error
		if errors.As(err, &e) {
			line["status"] = e.Status()
		}
	}
	b, _ := json.Marshal(line)
	fmt.Println(string(b))
}

func client(endpoint, cert, key string) *kes.Client {
	crt, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return kes.NewClientWithConfig(endpoint, &tls.Config{Certificates: []tls.Certificate{crt}, InsecureSkipVerify: true})
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: sdk ENDPOINT ADMIN.cert ADMIN.key APP.cert APP.key")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := client(os.Args[1], os.Args[2], os.Args[3])
	app := client(os.Args[1], os.Args[4], os.Args[5])

	v, err := admin.Version(ctx)
	emit("Version", v, err)
	ready, err := admin.IsReady(ctx)
	emit("IsReady", ready, err)
	ready, err = app.IsReady(ctx)
	emit("IsReady.app", ready, err)
	st, err := admin.Status(ctx)
	emit("Status.version", st.Version, err)
	emit("Status", map[string]any{"os": st.OS, "arch": st.Arch,
		"cpus>0": st.CPUs > 0, "usable_cpus>0": st.UsableCPUs > 0, "latency>0": st.KeyStoreLatency > 0,
		"reachable": st.KeyStoreReachable, "available": st.KeystoreAvailable}, err)
	apis, err := admin.APIs(ctx)
	var routes []string
	for _, a := range apis {
		routes = append(routes, fmt.Sprintf("%s %s max_body=%d timeout=%s", a.Method, a.Path, a.MaxBody, a.Timeout))
	}
	sort.Strings(routes)
	emit("APIs", routes, err)

	emit("CreateKey", nil, admin.CreateKey(ctx, "k1"))
	emit("CreateKey.again", nil, admin.CreateKey(ctx, "k1"))
	emit("CreateKey.bad-name", nil, admin.CreateKey(ctx, "a.b"))
	emit("CreateKey.empty-name", nil, admin.CreateKey(ctx, ""))
	emit("CreateKey.app", nil, app.CreateKey(ctx, "app-1"))
	emit("CreateKey.app.denied", nil, app.CreateKey(ctx, "k9"))
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	emit("ImportKey.AES256", nil, admin.ImportKey(ctx, "imp-aes", &kes.ImportKeyRequest{Key: key, Cipher: kes.AES256}))
	emit("ImportKey.ChaCha20", nil, admin.ImportKey(ctx, "imp-chacha", &kes.ImportKeyRequest{Key: key, Cipher: kes.ChaCha20}))
	emit("ImportKey.again", nil, admin.ImportKey(ctx, "imp-aes", &kes.ImportKeyRequest{Key: key, Cipher: kes.AES256}))
	emit("ImportKey.short", nil, admin.ImportKey(ctx, "imp-short", &kes.ImportKeyRequest{Key: key[:16], Cipher: kes.AES256}))
	for _, name := range []string{"k1", "imp-aes", "imp-chacha", "none", "a.b"} {
		info, err := admin.DescribeKey(ctx, name)
		var r any
		if info != nil {
			r = map[string]any{"name": info.Name, "algorithm": info.Algorithm.String(), "created_by": info.CreatedBy.String(),
				"created_at_set": !info.CreatedAt.IsZero()}
		}
		emit("DescribeKey."+name, r, err)
	}

	dek, err := admin.GenerateKey(ctx, "k1", []byte("ctx"))
	emit("GenerateKey", map[string]any{"plaintext": len(dek.Plaintext), "ciphertext>0": len(dek.Ciphertext) > 0}, err)
	pt, err := admin.Decrypt(ctx, "k1", dek.Ciphertext, []byte("ctx"))
	emit("Decrypt.dek", string(pt) == string(dek.Plaintext), err)
	_, err = admin.GenerateKey(ctx, "none", nil)
	emit("GenerateKey.missing", nil, err)
	_, err = app.GenerateKey(ctx, "k1", nil)
	emit("GenerateKey.app.denied", nil, err)
	ct, err := admin.Encrypt(ctx, "k1", []byte("hello"), []byte("ctx"))
	emit("Encrypt", len(ct) > 0, err)
	pt, err = admin.Decrypt(ctx, "k1", ct, []byte("ctx"))
	emit("Decrypt", string(pt), err)
	_, err = admin.Decrypt(ctx, "k1", ct, []byte("other"))
	emit("Decrypt.wrong-context", nil, err)
	_, err = admin.Decrypt(ctx, "imp-aes", ct, []byte("ctx"))
	emit("Decrypt.other-key", nil, err)
	_, err = admin.Decrypt(ctx, "k1", []byte("not a ciphertext"), nil)
	emit("Decrypt.garbage", nil, err)
	ct, err = admin.Encrypt(ctx, "imp-chacha", []byte("hi"), nil)
	emit("Encrypt.chacha", len(ct) > 0, err)
	pt, err = admin.Decrypt(ctx, "imp-chacha", ct, nil)
	emit("Decrypt.chacha", string(pt), err)
	m1, err := admin.HMAC(ctx, "k1", []byte("m"))
	m2, err2 := admin.HMAC(ctx, "k1", []byte("m"))
	m3, _ := admin.HMAC(ctx, "k1", []byte("n"))
	emit("HMAC", map[string]any{"len": len(m1), "stable": string(m1) == string(m2), "differs": string(m1) != string(m3), "err2": err2 != nil}, err)
	_, err = admin.HMAC(ctx, "none", []byte("m"))
	emit("HMAC.missing", nil, err)

	for _, prefix := range []string{"", "*", "k", "imp-", "zz", "a.b"} {
		names, next, err := admin.ListKeys(ctx, prefix, -1)
		emit("ListKeys."+prefix, map[string]any{"names": names, "continue": next}, err)
	}
	iter := kes.ListIter[string]{NextFunc: admin.ListKeys}
	var all []string
	for {
		name, err := iter.Next(ctx)
		if err != nil {
			break
		}
		all = append(all, name)
	}
	emit("ListIter", all, nil)

	pinfo, err := admin.DescribePolicy(ctx, "my-app")
	var r any
	if pinfo != nil {
		r = map[string]any{"name": pinfo.Name, "created_by": pinfo.CreatedBy.String(), "created_at_set": !pinfo.CreatedAt.IsZero()}
	}
	emit("DescribePolicy", r, err)
	_, err = admin.DescribePolicy(ctx, "none")
	emit("DescribePolicy.missing", nil, err)
	pol, err := admin.GetPolicy(ctx, "my-app")
	r = nil
	if pol != nil {
		r = map[string]any{"allow": len(pol.Allow), "deny": len(pol.Deny)}
	}
	emit("GetPolicy", r, err)
	names, next, err := admin.ListPolicies(ctx, "", -1)
	emit("ListPolicies", map[string]any{"names": names, "continue": next}, err)
	_, _, err = app.ListPolicies(ctx, "", -1)
	emit("ListPolicies.app", nil, err)

	self, selfPolicy, err := admin.DescribeSelf(ctx)
	r = nil
	if self != nil {
		r = map[string]any{"identity": self.Identity.String(), "admin": self.IsAdmin, "policy": selfPolicy != nil}
	}
	emit("DescribeSelf", r, err)
	ids, next, err := admin.ListIdentities(ctx, "", -1)
	var idStrings []string
	for _, id := range ids {
		idStrings = append(idStrings, id.String())
	}
	emit("ListIdentities", map[string]any{"identities": idStrings, "continue": next}, err)
	for _, id := range idStrings {
		info, err := admin.DescribeIdentity(ctx, kes.Identity(id))
		r = nil
		if info != nil {
			r = map[string]any{"admin": info.IsAdmin, "policy": info.Policy, "created_by": info.CreatedBy.String()}
		}
		emit("DescribeIdentity", r, err)
	}
	_, err = admin.DescribeIdentity(ctx, kes.Identity("0000000000000000000000000000000000000000000000000000000000000000"))
	emit("DescribeIdentity.unknown", nil, err)

	metric, err := admin.Metrics(ctx)
	emit("Metrics", map[string]any{"ok>0": metric.RequestOK > 0, "err>0": metric.RequestErr > 0,
		"fail": metric.RequestFail, "buckets": len(metric.LatencyHistogram)}, err)

	emit("DeleteKey", nil, admin.DeleteKey(ctx, "k1"))
	emit("DeleteKey.again", nil, admin.DeleteKey(ctx, "k1"))
	emit("DeleteKey.app.denied", nil, app.DeleteKey(ctx, "imp-aes"))
	emit("DeleteKey.app", nil, app.DeleteKey(ctx, "app-1"))

	// Last, each with its own deadline: a stream that never answers (the newest
	// KES's) must not hold up the other calls.
	logs := func(call string, open func(context.Context) (interface{ Close() error }, error)) {
		lctx, lcancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer lcancel()
		stream, err := open(lctx)
		if err != nil {
			emit(call, false, err)
			return
		}
		stream.Close()
		emit(call, true, nil)
	}
	logs("AuditLog", func(c context.Context) (interface{ Close() error }, error) { return admin.AuditLog(c) })
	logs("ErrorLog", func(c context.Context) (interface{ Close() error }, error) { return admin.ErrorLog(c) })
	logs("AuditLog.app.denied", func(c context.Context) (interface{ Close() error }, error) { return app.AuditLog(c) })
}
