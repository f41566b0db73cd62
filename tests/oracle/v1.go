// InfluxDB 1.x /query and /write, read as services/httpd/handler.go reads
// them (1.6 through 1.8; the Debian 1.6.7 build these tests run against is
// built with Go 1.19.8, the same standard library as this oracle).

package main

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// defaultMaxMemory is net/http's (request.go): FormValue calls
// ParseMultipartForm(defaultMaxMemory).
const defaultMaxMemory = 32 << 20

// V1Query is what (*Handler).serveQuery reads.
type V1Query struct {
	// Q is the text handed to influxql.NewParser: TrimSpace(FormValue("q")),
	// or, when that is empty, the content of the multipart file part "q".
	Q Raw `json:"q"`
	// QSource: "form", "multipart_file", or "" (InfluxDB answers 400
	// `missing required parameter "q"`).
	QSource string `json:"q_source"`
	// QText is Q as the InfluxQL scanner reads it: one U+FFFD per invalid
	// byte (scanner.go reads runes through bufio.Reader.ReadRune).
	QText  string `json:"q_text"`
	QError string `json:"q_error,omitempty"`

	DB    Raw `json:"db"`
	RP    Raw `json:"rp"`
	Epoch Raw `json:"epoch"`
	// Chunked is FormValue("chunked") == "true"; ChunkSize the effective
	// size (DefaultChunkSize unless chunked with a positive chunk_size).
	Chunked   bool   `json:"chunked"`
	ChunkSize int64  `json:"chunk_size"`
	Async     bool   `json:"async"`
	NodeID    uint64 `json:"node_id"`
	// Pretty is read from the URL only (response_writer.go
	// NewResponseWriter: r.URL.Query().Get("pretty") == "true").
	Pretty bool `json:"pretty"`
	// TimeFormat is FormValue("time_format") (1.12.3 and later: epoch or
	// rfc3339 timestamps in the answer, anything else refused).
	TimeFormat Raw `json:"time_format"`

	// ParamsRaw is FormValue("params"); Params the bound parameters as
	// influxql's Parser.SetParams binds them; ParamsError is the 400
	// InfluxDB answers when they do not decode.
	ParamsRaw   Raw                   `json:"params_raw"`
	Params      map[string]BoundParam `json:"params"`
	ParamsError string                `json:"params_error,omitempty"`

	// U and P are the credentials parseCredentials reads from the URL.
	U Raw `json:"u"`
	P Raw `json:"p"`

	// Form is r.Form after parsing (body values first for urlencoded
	// bodies, URL values first for multipart); PostForm the body's share.
	Form      map[string][]Raw `json:"form"`
	PostForm  map[string][]Raw `json:"post_form"`
	FormError string           `json:"form_error,omitempty"`
	// Multipart is true when r.MultipartForm was set; Files the file
	// parts by form name.
	Multipart bool                       `json:"multipart"`
	Files     map[string][]MultipartFile `json:"files,omitempty"`
}

// MultipartFile is one file part of a multipart form.
type MultipartFile struct {
	Filename Raw `json:"filename"`
	Content  Raw `json:"content"`
}

// BoundParam is one bound parameter as influxql params.go BindValue binds it.
type BoundParam struct {
	// Kind: identifier, string, regex, number, integer, boolean, duration,
	// or error (an ErrorValue: using it fails the query).
	Kind  string `json:"kind"`
	Value Raw    `json:"value"`
}

func readV1Query(r *http.Request) *V1Query {
	q := &V1Query{}
	// serveQuery's first form access is r.FormValue("node_id"), which runs
	// r.ParseMultipartForm(defaultMaxMemory) and ignores its error; calling
	// it here does exactly that and keeps the error for the report.
	if err := r.ParseMultipartForm(defaultMaxMemory); err != nil {
		q.FormError = err.Error()
	}
	q.NodeID, _ = strconv.ParseUint(r.FormValue("node_id"), 10, 64)

	if qp := strings.TrimSpace(r.FormValue("q")); qp != "" {
		q.Q, q.QSource = Raw(qp), "form"
	} else if r.MultipartForm != nil && r.MultipartForm.File != nil {
		if fhs := r.MultipartForm.File["q"]; len(fhs) > 0 {
			f, err := fhs[0].Open()
			if err != nil {
				q.QError = err.Error()
			} else {
				b, err := io.ReadAll(f)
				f.Close()
				if err != nil {
					q.QError = err.Error()
				} else {
					q.Q, q.QSource = Raw(b), "multipart_file"
				}
			}
		}
	}
	q.QText = runes(string(q.Q))

	q.Epoch = Raw(strings.TrimSpace(r.FormValue("epoch")))
	q.DB = Raw(r.FormValue("db"))
	q.ParamsRaw = Raw(r.FormValue("params"))
	q.Params, q.ParamsError = bindParams(string(q.ParamsRaw))

	q.Chunked = r.FormValue("chunked") == "true"
	q.ChunkSize = 10000 // DefaultChunkSize
	if q.Chunked {
		if n, err := strconv.ParseInt(r.FormValue("chunk_size"), 10, 64); err == nil && int(n) > 0 {
			q.ChunkSize = n
		}
	}
	q.Async = r.FormValue("async") == "true"
	q.RP = Raw(r.FormValue("rp"))
	q.Pretty = r.URL.Query().Get("pretty") == "true"
	q.TimeFormat = Raw(r.FormValue("time_format"))

	urlq := r.URL.Query()
	q.U, q.P = Raw(urlq.Get("u")), Raw(urlq.Get("p"))

	q.Form = rawValues(r.Form)
	q.PostForm = rawValues(r.PostForm)
	if r.MultipartForm != nil {
		q.Multipart = true
		q.Files = map[string][]MultipartFile{}
		for name, fhs := range r.MultipartForm.File {
			for _, fh := range fhs {
				mf := MultipartFile{Filename: Raw(fh.Filename)}
				if f, err := fh.Open(); err == nil {
					b, _ := io.ReadAll(f)
					f.Close()
					mf.Content = Raw(b)
				}
				q.Files[name] = append(q.Files[name], mf)
			}
		}
	}
	return q
}

// bindParams decodes `params` as serveQuery does (json.Decoder with
// UseNumber: only the first JSON value is read; top-level numbers become
// float64 when they contain "." and int64 otherwise) and binds each value
// as influxql's Parser.SetParams does (params.go BindValue).
func bindParams(raw string) (map[string]BoundParam, string) {
	if raw == "" {
		return nil, ""
	}
	var params map[string]interface{}
	decoder := json.NewDecoder(strings.NewReader(raw))
	decoder.UseNumber()
	if err := decoder.Decode(&params); err != nil {
		return nil, "error parsing query parameters: " + err.Error()
	}
	for k, v := range params {
		if n, ok := v.(json.Number); ok {
			var err error
			if strings.Contains(string(n), ".") {
				params[k], err = n.Float64()
			} else {
				params[k], err = n.Int64()
			}
			if err != nil {
				return nil, "error parsing json value: " + err.Error()
			}
		}
	}
	out := make(map[string]BoundParam, len(params))
	for name, v := range params {
		out[name] = bindValue(v)
	}
	return out, ""
}

func jsonNumberToValue(n json.Number) (interface{}, error) {
	if strings.Contains(string(n), ".") {
		return n.Float64()
	}
	return n.Int64()
}

func bindValue(v interface{}) BoundParam {
	if n, ok := v.(json.Number); ok {
		var err error
		if v, err = jsonNumberToValue(n); err != nil {
			return BoundParam{"error", Raw(err.Error())}
		}
	}
	switch v := v.(type) {
	case float64:
		return BoundParam{"number", Raw(strconv.FormatFloat(v, 'f', -1, 64))}
	case int64:
		return BoundParam{"integer", Raw(strconv.FormatInt(v, 10))}
	case string:
		return BoundParam{"string", Raw(v)}
	case bool:
		return BoundParam{"boolean", Raw(strconv.FormatBool(v))}
	case map[string]interface{}:
		return bindObject(v)
	default:
		return BoundParam{"error", Raw(fmt.Sprintf("unable to bind parameter with type %T", v))}
	}
}

// bindObject is params.go bindObjectValue: {"identifier": "name"} and the
// other single-entry typed forms.
func bindObject(m map[string]interface{}) BoundParam {
	if len(m) != 1 {
		return BoundParam{"error", "bound object parameter value must have exactly one entry"}
	}
	var k string
	var v interface{}
	for k, v = range m {
	}
	if n, ok := v.(json.Number); ok {
		var err error
		if v, err = jsonNumberToValue(n); err != nil {
			return BoundParam{"error", Raw(err.Error())}
		}
	}
	switch k {
	case "ident", "identifier":
		if s, ok := v.(string); ok {
			return BoundParam{"identifier", Raw(s)}
		}
		return BoundParam{"error", "identifier must be a string value"}
	case "regex":
		if s, ok := v.(string); ok {
			return BoundParam{"regex", Raw(s)}
		}
		return BoundParam{"error", "regex literal must be a string value"}
	case "string":
		if s, ok := v.(string); ok {
			return BoundParam{"string", Raw(s)}
		}
		return BoundParam{"error", "string literal must be a string value"}
	case "float", "number":
		switch f := v.(type) {
		case float64:
			return BoundParam{"number", Raw(strconv.FormatFloat(f, 'f', -1, 64))}
		case int64:
			return BoundParam{"number", Raw(strconv.FormatFloat(float64(f), 'f', -1, 64))}
		}
		return BoundParam{"error", "number literal must be a float value"}
	case "int", "integer":
		if i, ok := v.(int64); ok {
			return BoundParam{"integer", Raw(strconv.FormatInt(i, 10))}
		}
		return BoundParam{"error", "integer literal must be an integer value"}
	case "duration":
		switch d := v.(type) {
		case string:
			return BoundParam{"duration", Raw(d)}
		case int64:
			return BoundParam{"duration", Raw(time.Duration(d).String())}
		}
		return BoundParam{"error", "duration literal must be a string or integer value"}
	default:
		return BoundParam{"error", Raw("unknown bind object type: " + k)}
	}
}

// V1Write is what (*Handler).serveWrite reads: parameters from the URL
// only (r.URL.Query()), the body gunzipped when the first Content-Encoding
// value is exactly "gzip".
type V1Write struct {
	DB          Raw  `json:"db"`
	RP          Raw  `json:"rp"`
	Precision   Raw  `json:"precision"`
	Consistency Raw  `json:"consistency"`
	U           Raw  `json:"u"`
	P           Raw  `json:"p"`
	Body        Body `json:"body"`
}

// Body is a write body as the handler reads it.
type Body struct {
	Gzip bool `json:"gzip"`
	// SHA256 and Len describe the decoded bytes; Lines counts the
	// non-empty lines of line protocol.
	SHA256      string `json:"sha256"`
	Len         int    `json:"len"`
	Lines       int    `json:"lines"`
	DecodeError string `json:"decode_error,omitempty"`
}

// readWriteBody decodes as serveWrite does: `r.Header.Get("Content-Encoding")
// == "gzip"` (case-sensitive, first header only) → gzip.NewReader, which
// reads concatenated members (multistream is the default).
func readWriteBody(r *http.Request, raw []byte, multistream bool) Body {
	b := Body{Gzip: r.Header.Get("Content-Encoding") == "gzip"}
	data := raw
	if b.Gzip {
		zr, err := gzip.NewReader(strings.NewReader(string(raw)))
		if err != nil {
			b.DecodeError = err.Error()
			return b
		}
		zr.Multistream(multistream)
		data, err = io.ReadAll(zr)
		if err != nil {
			b.DecodeError = err.Error()
		}
	}
	b.describe(data)
	return b
}

// describe fills in the hash, length and line count of decoded bytes.
func (b *Body) describe(data []byte) {
	sum := sha256.Sum256(data)
	b.SHA256 = hex.EncodeToString(sum[:])
	b.Len = len(data)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) != "" {
			b.Lines++
		}
	}
}

func readV1Write(r *http.Request, raw []byte) *V1Write {
	q := r.URL.Query()
	return &V1Write{
		DB:          Raw(q.Get("db")),
		RP:          Raw(q.Get("rp")),
		Precision:   Raw(q.Get("precision")),
		Consistency: Raw(q.Get("consistency")),
		U:           Raw(q.Get("u")),
		P:           Raw(q.Get("p")),
		Body:        readWriteBody(r, raw, true),
	}
}
