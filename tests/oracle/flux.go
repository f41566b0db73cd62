// /api/v2/query (Flux) and /api/v2/write, read as InfluxDB 2.x and 1.8 read
// them.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// queryRequest has the shape of InfluxDB's Flux QueryRequest: 2.x
// http/query.go QueryRequest and 1.8 flux/client/request.go QueryRequest
// (the union: 1.8 has no Bucket, older 2.x no Now). encoding/json matches
// object keys to these fields case-insensitively (with Unicode folding:
// "ſ" matches "s", "K" (Kelvin) matches "k"), the last duplicate wins and
// unknown keys are ignored. PreferNoContent* carry no json tag, so the
// keys "PreferNoContent" / "PreferNoContentWithError" (any case) set them.
type queryRequest struct {
	Type  string `json:"type"`
	Query string `json:"query"`

	Extern  json.RawMessage `json:"extern,omitempty"`
	AST     json.RawMessage `json:"ast,omitempty"`
	Dialect queryDialect    `json:"dialect"`
	Now     time.Time       `json:"now"`

	Bucket string `json:"bucket,omitempty"`

	PreferNoContent          bool
	PreferNoContentWithError bool
}

type queryDialect struct {
	Header         *bool    `json:"header"`
	Delimiter      string   `json:"delimiter"`
	CommentPrefix  string   `json:"commentPrefix"`
	DateTimeFormat string   `json:"dateTimeFormat"`
	Annotations    []string `json:"annotations"`
}

// FluxQuery is the decoded request.
type FluxQuery struct {
	// MediaType from Content-Type (2.x: "application/json" when absent;
	// 1.8 fails on an absent one: MediaTypeError18).
	MediaType        string `json:"media_type"`
	MediaTypeError   string `json:"media_type_error,omitempty"`
	MediaTypeError18 string `json:"media_type_error_1_8,omitempty"`
	// DecodeError: json.NewDecoder(r.Body).Decode failed (InfluxDB answers
	// 400). The decoder reads one JSON value: trailing bytes are ignored.
	// The body is decoded raw: neither 1.8 (services/httpd/flux.go) nor 2.x
	// (http/query.go decodeQueryRequest) undoes Content-Encoding there.
	DecodeError string `json:"decode_error,omitempty"`

	Type  Raw `json:"type"`
	Query Raw `json:"query"`
	// Extern and AST as raw JSON (present: non-empty), and as Go decodes
	// them generically (duplicate keys: last wins).
	Extern      Raw         `json:"extern"`
	ExternValue interface{} `json:"extern_value"`
	AST         Raw         `json:"ast"`
	ASTValue    interface{} `json:"ast_value"`
	// Dialect after WithDefaults.
	Dialect                  dialectReading `json:"dialect"`
	Now                      string         `json:"now"`
	Bucket                   Raw            `json:"bucket"`
	PreferNoContent          bool           `json:"prefer_no_content"`
	PreferNoContentWithError bool           `json:"prefer_no_content_with_error"`
	// ValidateError: QueryRequest.Validate refused it (400).
	ValidateError string `json:"validate_error,omitempty"`
	// Compiler is what ProxyRequest builds: "flux" (Query, with Extern),
	// "ast" (AST, with Extern; only when Query is empty) or "".
	Compiler string `json:"compiler"`
}

type dialectReading struct {
	Header         bool     `json:"header"`
	Delimiter      Raw      `json:"delimiter"`
	CommentPrefix  Raw      `json:"comment_prefix"`
	DateTimeFormat Raw      `json:"date_time_format"`
	Annotations    []string `json:"annotations"`
}

func readFluxQuery(r *http.Request, raw []byte) *FluxQuery {
	out := &FluxQuery{}
	ct := r.Header.Get("Content-Type")
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		out.MediaTypeError18 = err.Error()
	}
	if ct == "" {
		ct = "application/json"
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		out.MediaTypeError = err.Error()
		return out
	}
	out.MediaType = mt

	var req queryRequest
	switch mt {
	case "application/vnd.flux":
		req.Query = string(raw)
	default:
		if err := json.NewDecoder(strings.NewReader(string(raw))).Decode(&req); err != nil {
			out.DecodeError = err.Error()
			return out
		}
	}
	// The Prefer header (2.x decodeQueryRequest) can only turn these on.
	switch r.Header.Get("Prefer") {
	case "return-no-content":
		req.PreferNoContent = true
	case "return-no-content-with-error":
		req.PreferNoContentWithError = true
	}
	req = req.withDefaults()

	out.Type = Raw(req.Type)
	out.Query = Raw(req.Query)
	out.Extern = Raw(req.Extern)
	out.AST = Raw(req.AST)
	out.ExternValue = generic(req.Extern)
	out.ASTValue = generic(req.AST)
	out.Dialect = dialectReading{
		Header:         *req.Dialect.Header,
		Delimiter:      Raw(req.Dialect.Delimiter),
		CommentPrefix:  Raw(req.Dialect.CommentPrefix),
		DateTimeFormat: Raw(req.Dialect.DateTimeFormat),
		Annotations:    req.Dialect.Annotations,
	}
	if !req.Now.IsZero() {
		out.Now = req.Now.Format(time.RFC3339Nano)
	}
	out.Bucket = Raw(req.Bucket)
	out.PreferNoContent = req.PreferNoContent
	out.PreferNoContentWithError = req.PreferNoContentWithError
	if err := req.validate(); err != nil {
		out.ValidateError = err.Error()
	}
	switch {
	case req.Query != "":
		out.Compiler = "flux"
	case len(req.AST) > 0:
		out.Compiler = "ast"
	}
	return out
}

func generic(raw json.RawMessage) interface{} {
	if len(raw) == 0 {
		return nil
	}
	var v interface{}
	if err := json.Unmarshal(raw, &v); err != nil {
		return map[string]string{"oracle_error": err.Error()}
	}
	return v
}

// withDefaults is QueryRequest.WithDefaults.
func (r queryRequest) withDefaults() queryRequest {
	if r.Type == "" {
		r.Type = "flux"
	}
	if r.Dialect.Delimiter == "" {
		r.Dialect.Delimiter = ","
	}
	if r.Dialect.DateTimeFormat == "" {
		r.Dialect.DateTimeFormat = "RFC3339"
	}
	if r.Dialect.Header == nil {
		header := true
		r.Dialect.Header = &header
	}
	return r
}

// validate is QueryRequest.Validate (2.x: type flux, or influxql with a
// bucket; 1.8 accepts flux only, which the tests see through Type).
func (r queryRequest) validate() error {
	if r.Query == "" && r.AST == nil {
		return errors.New(`request body requires either query or AST`)
	}
	if r.Type != "flux" && r.Type != "influxql" {
		return fmt.Errorf(`unknown query type: %s`, r.Type)
	}
	if r.Type == "influxql" && r.Bucket == "" {
		return fmt.Errorf("bucket parameter is required for influxql queries")
	}
	if len(r.Dialect.CommentPrefix) > 1 {
		return fmt.Errorf("invalid dialect comment prefix: must be length 0 or 1")
	}
	if len(r.Dialect.Delimiter) != 1 {
		return fmt.Errorf("invalid dialect delimeter: must be length 1")
	}
	if rn, size := utf8.DecodeRuneInString(r.Dialect.Delimiter); rn == utf8.RuneError && size == 1 {
		return fmt.Errorf("invalid dialect delimeter character")
	}
	for _, a := range r.Dialect.Annotations {
		switch a {
		case "group", "datatype", "default":
		default:
			return fmt.Errorf(`unknown dialect annotation type: %s`, a)
		}
	}
	switch r.Dialect.DateTimeFormat {
	case "RFC3339", "RFC3339Nano":
	default:
		return fmt.Errorf(`unknown dialect date time format: %s`, r.Dialect.DateTimeFormat)
	}
	return nil
}

// V2Write is /api/v2/write: 2.x reads bucket, org and precision from the
// URL; 1.8's serveWriteV2 maps the bucket to a database and retention
// policy with bucket2dbrp (split at the first "/").
type V2Write struct {
	Bucket    Raw    `json:"bucket"`
	Org       Raw    `json:"org"`
	Precision Raw    `json:"precision"`
	DB18      Raw    `json:"db_1_8"`
	RP18      Raw    `json:"rp_1_8"`
	Error18   string `json:"error_1_8,omitempty"`
	Body      Body   `json:"body"`
}

func readV2Write(r *http.Request, raw []byte) *V2Write {
	q := r.URL.Query()
	w := &V2Write{
		Bucket:    Raw(q.Get("bucket")),
		Org:       Raw(q.Get("org")),
		Precision: Raw(q.Get("precision")),
		Body:      readWriteBody(r, raw, true),
	}
	db, rp, err := bucket2dbrp(q.Get("bucket"))
	w.DB18, w.RP18 = Raw(db), Raw(rp)
	if err != nil {
		w.Error18 = err.Error()
	}
	return w
}

// bucket2dbrp is 1.8 handler.go bucket2dbrp.
func bucket2dbrp(bucket string) (string, string, error) {
	switch idx := strings.IndexByte(bucket, '/'); idx {
	case -1:
		if bucket == "" {
			return "", "", fmt.Errorf(`bucket name %q is missing a slash; not in "database/retention-policy" format`, bucket)
		}
		return bucket, "", nil
	default:
		db, rp := bucket[:idx], bucket[idx+1:]
		if db == "" {
			return "", "", fmt.Errorf(`bucket name %q is in db/rp form but has an empty database`, bucket)
		}
		return db, rp, nil
	}
}
