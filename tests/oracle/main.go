// Command oracle is a reference reader for the differential tests: an HTTP
// server on 127.0.0.1 that reads every request exactly as InfluxDB does
// (Go's net/http, mime/multipart, encoding/json and compress/gzip, called
// the way InfluxDB's handlers call them) and answers, and records, a JSON
// description of what it read.
//
// Usage: oracle [-addr 127.0.0.1:0] [-addr-file PATH]
//
// The first line on stdout is the listening address (host:port); with
// -addr-file it is also written to PATH. Every request is answered 200 with
// its reading as JSON (header X-Oracle-Seq: its sequence number) and kept;
// GET /__oracle/requests?since=N returns the readings numbered N and up.
//
// Sources followed (cited again where each rule is applied):
//   - InfluxDB 1.x services/httpd/handler.go: serveQuery, serveWrite,
//     serveWriteV2/bucket2dbrp (1.8), parseCredentials; response_writer.go
//     NewResponseWriter (pretty); services/httpd/flux.go decodeQueryRequest
//     and flux/client QueryRequest (1.8);
//   - InfluxDB 2.x http/query.go QueryRequest, decodeQueryRequest;
//   - influxdata/influxql params.go BindValue (bound parameters);
//   - InfluxDB 3 influxdb3_server/src/http.rs read_body / QueryParams
//     (emulated: it is Rust, so serde's rules are re-stated in v3.go);
//   - Go 1.19 net/http request.go (ParseForm, ParseMultipartForm,
//     FormValue), net/url parseQuery, mime/multipart.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
)

// maxBody bounds what the oracle buffers of one request body.
const maxBody = 64 << 20

// Reading is everything the oracle saw of one request.
type Reading struct {
	Seq        int    `json:"seq"`
	Method     string `json:"method"`
	RequestURI Raw    `json:"request_uri"`
	// Path is r.URL.Path: percent-decoded by net/http, which is what
	// InfluxDB's router (bmizerany/pat) matches on.
	Path     Raw              `json:"path"`
	RawQuery Raw              `json:"raw_query"`
	Proto    string           `json:"proto"`
	Headers  map[string][]Raw `json:"headers"`
	Trailers map[string][]Raw `json:"trailers"`
	// Body is the raw body as received (after HTTP/1.1 chunked framing is
	// undone by net/http; Content-Encoding is not undone here).
	BodyB64   string `json:"body_b64"`
	BodyLen   int    `json:"body_len"`
	BodyError string `json:"body_error,omitempty"`
	// Endpoint: v1_query, v1_write, v2_query, v2_write, v3_query, v3_write,
	// method_not_allowed or other.
	Endpoint  string     `json:"endpoint"`
	V1Query   *V1Query   `json:"v1_query,omitempty"`
	V1Write   *V1Write   `json:"v1_write,omitempty"`
	FluxQuery *FluxQuery `json:"flux_query,omitempty"`
	V2Write   *V2Write   `json:"v2_write,omitempty"`
	V3Query   *V3Query   `json:"v3_query,omitempty"`
	V3Write   *V3Write   `json:"v3_write,omitempty"`
}

type oracle struct {
	mu       sync.Mutex
	readings []json.RawMessage
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	addrFile := flag.String("addr-file", "", "also write the listening address to this file")
	flag.Parse()

	host, _, err := net.SplitHostPort(*addr)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		log.Fatalf("oracle: -addr must be a loopback IP address with a port, got %q", *addr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("oracle: listen: %v", err)
	}
	bound := ln.Addr().String()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(bound+"\n"), 0o600); err != nil {
			log.Fatalf("oracle: write address: %v", err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatalf("oracle: write address: %v", err)
		}
	}
	fmt.Println(bound)

	o := &oracle{}
	// A plain http.Server, as influxd uses (services/httpd/service.go
	// serves its handler with http.Serve): same request parsing.
	// ErrorLog discarded: Go warns on every query string holding ";",
	// which the tests send on purpose.
	srv := &http.Server{Handler: o, ErrorLog: log.New(io.Discard, "", 0)}
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("oracle: serve: %v", err)
	}
}

func (o *oracle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/__oracle/requests" {
		o.list(w, r)
		return
	}
	reading := read(r)
	o.mu.Lock()
	reading.Seq = len(o.readings)
	encoded, err := json.Marshal(reading)
	if err != nil {
		o.mu.Unlock()
		http.Error(w, "oracle: cannot encode reading: "+err.Error(), http.StatusInternalServerError)
		return
	}
	o.readings = append(o.readings, encoded)
	o.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Oracle-Seq", strconv.Itoa(reading.Seq))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(encoded)
}

func (o *oracle) list(w http.ResponseWriter, r *http.Request) {
	since := 0
	if s := r.URL.Query().Get("since"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			http.Error(w, "bad since", http.StatusBadRequest)
			return
		}
		since = n
	}
	o.mu.Lock()
	var out []json.RawMessage
	if since < len(o.readings) {
		out = append(out, o.readings[since:]...)
	}
	o.mu.Unlock()
	if out == nil {
		out = []json.RawMessage{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// read buffers the body (so the raw bytes can be reported) and hands the
// request to the reader InfluxDB would use for its path and method.
func read(r *http.Request) *Reading {
	reading := &Reading{
		Method:     r.Method,
		RequestURI: Raw(r.RequestURI),
		Path:       Raw(r.URL.Path),
		RawQuery:   Raw(r.URL.RawQuery),
		Proto:      r.Proto,
		Headers:    rawValues(r.Header),
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		reading.BodyError = err.Error()
	}
	reading.Trailers = rawValues(r.Trailer)
	reading.BodyB64 = base64.StdEncoding.EncodeToString(raw)
	reading.BodyLen = len(raw)
	r.Body = io.NopCloser(bytes.NewReader(raw))

	// Routes as InfluxDB registers them (1.x handler.go NewHandler, the
	// 1.8 /api/v2 routes, InfluxDB 3's router), matched on r.URL.Path.
	switch path := r.URL.Path; {
	case path == "/query" && (r.Method == http.MethodGet || r.Method == http.MethodPost):
		reading.Endpoint = "v1_query"
		reading.V1Query = readV1Query(r)
	case path == "/write" && r.Method == http.MethodPost:
		reading.Endpoint = "v1_write"
		reading.V1Write = readV1Write(r, raw)
	case path == "/api/v2/query" && r.Method == http.MethodPost:
		reading.Endpoint = "v2_query"
		reading.FluxQuery = readFluxQuery(r, raw)
	case path == "/api/v2/write" && r.Method == http.MethodPost:
		reading.Endpoint = "v2_write"
		reading.V2Write = readV2Write(r, raw)
	case (path == "/api/v3/query_sql" || path == "/api/v3/query_influxql") &&
		(r.Method == http.MethodGet || r.Method == http.MethodPost):
		reading.Endpoint = "v3_query"
		reading.V3Query = readV3Query(r, raw)
	case path == "/api/v3/write_lp" && r.Method == http.MethodPost:
		reading.Endpoint = "v3_write"
		reading.V3Write = readV3Write(r, raw)
	case path == "/query" || path == "/write" || path == "/api/v2/query" ||
		path == "/api/v2/write" || path == "/api/v3/query_sql" ||
		path == "/api/v3/query_influxql" || path == "/api/v3/write_lp":
		reading.Endpoint = "method_not_allowed"
	default:
		reading.Endpoint = "other"
	}
	return reading
}
