// The compatibility harness's HTTP client: Go's net/http, the client stack KES's own
// clients use, so that trailers (which curl does not report over h2) and both protocols
// are seen as a KES client sees them.
//
// It reads one JSON request per line on stdin and writes one JSON response per line on
// stdout, in order:
//
//	{"url":"https://127.0.0.1:7373","method":"GET","path":"/v1/key/list/*",
//	 "body":"<base64>","headers":{"Accept":"..."},"cert":"c.pem","key":"k.pem",
//	 "proto":"h1"|"h2","read_ms":0}
//	{"status":200,"headers":{...},"trailers":{...},"body":"<base64>","error":""}
//
// The path is sent exactly as given (no cleaning, no escaping). read_ms > 0 reads a
// streaming body for that long and returns what arrived.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

type request struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Body    *string           `json:"body"`
	Headers map[string]string `json:"headers"`
	Cert    string            `json:"cert"`
	Key     string            `json:"key"`
	Proto   string            `json:"proto"`
	ReadMS  int               `json:"read_ms"`
	// Fresh: a connection of its own, closed after the answer.
	Fresh bool `json:"fresh"`
}

type response struct {
	Status   int                 `json:"status"`
	Headers  map[string][]string `json:"headers"`
	Trailers map[string][]string `json:"trailers"`
	Body     string              `json:"body"`
	Error    string              `json:"error,omitempty"`
}

var clients = map[string]*http.Client{}

func client(r *request) (*http.Client, error) {
	id := r.Cert + "\x00" + r.Key + "\x00" + r.Proto
	if c, ok := clients[id]; ok && !r.Fresh {
		return c, nil
	}
	conf := &tls.Config{InsecureSkipVerify: true}
	if r.Cert != "" {
		crt, err := tls.LoadX509KeyPair(r.Cert, r.Key)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{crt}
	}
	tr := &http.Transport{TLSClientConfig: conf, DisableCompression: true}
	if r.Proto == "h2" {
		tr.ForceAttemptHTTP2 = true
	} else {
		// A non-nil, empty map turns HTTP/2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	c := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if r.Fresh {
		tr.DisableKeepAlives = true
	} else {
		clients[id] = c
	}
	return c, nil
}

func do(r *request) response {
	c, err := client(r)
	if err != nil {
		return response{Error: err.Error()}
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return response{Error: err.Error()}
	}
	u.Opaque = "//" + u.Host + r.Path
	var body io.Reader
	if r.Body != nil {
		b, err := base64.StdEncoding.DecodeString(*r.Body)
		if err != nil {
			return response{Error: err.Error()}
		}
		body = strings.NewReader(string(b))
	}
	timeout := 20 * time.Second
	if r.ReadMS > 0 {
		timeout = time.Duration(r.ReadMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return response{Error: err.Error()}
	}
	req.URL = u
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		if r.ReadMS > 0 && errors.Is(err, context.DeadlineExceeded) {
			return response{Error: "no response headers within read_ms"}
		}
		return response{Error: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	out := response{
		Status:   resp.StatusCode,
		Headers:  resp.Header,
		Trailers: resp.Trailer,
		Body:     base64.StdEncoding.EncodeToString(data),
	}
	if err != nil && !(r.ReadMS > 0 && errors.Is(err, context.DeadlineExceeded)) {
		out.Error = err.Error()
	}
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<20), 64<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r request
		var out response
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			out = response{Error: "probe: " + err.Error()}
		} else {
			out = do(&r)
		}
		if err := enc.Encode(out); err != nil {
			os.Exit(1)
		}
	}
}
