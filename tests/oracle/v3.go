// InfluxDB 3 query and write requests. InfluxDB 3 is Rust, so this is an
// emulation of its rules, stated here rather than inherited from Go:
//   - request bodies (influxdb3_server/src/http.rs read_body): the first
//     Content-Encoding value must be absent, "identity" or "gzip" (exact
//     bytes), anything else is refused; gzip is read with flate2's
//     MultiGzDecoder (every member; bytes after the last member that are
//     not a gzip header are an error) — early 3.x used GzDecoder (first
//     member only), which the canonical form makes moot: no encoding is
//     ever forwarded on query bodies;
//   - JSON bodies go through serde_json into #[derive(Deserialize)] structs:
//     keys match exactly (case-sensitive), a repeated known key is an error
//     ("duplicate field"), unknown keys are ignored, trailing non-whitespace
//     is an error, strings must be valid UTF-8 and a byte-order mark is a
//     syntax error;
//   - URL parameters go through serde_urlencoded (form_urlencoded::parse):
//     "+" is a space, malformed "%" escapes are kept as they are, invalid
//     UTF-8 is replaced lossily (one U+FFFD per maximal invalid subpart),
//     and a repeated known key is an error.

package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

// V3Query is a query_sql / query_influxql request.
type V3Query struct {
	// From the URL (GET), or the JSON body (POST).
	DB     Raw `json:"db"`
	Q      Raw `json:"q"`
	Format Raw `json:"format"`
	// Params is the raw JSON of "params" (POST), or the URL value (GET).
	Params Raw    `json:"params"`
	Error  string `json:"error,omitempty"`
	// URL is the URL's parameters as serde_urlencoded reads them, whatever
	// the method.
	URL      map[string]Raw `json:"url"`
	URLError string         `json:"url_error,omitempty"`
}

// V3Write is write_lp.
type V3Write struct {
	URL      map[string]Raw `json:"url"`
	URLError string         `json:"url_error,omitempty"`
	Body     Body           `json:"body"`
}

var v3QueryKeys = []string{"db", "q", "format", "params"}

func readV3Query(r *http.Request, raw []byte) *V3Query {
	out := &V3Query{}
	out.URL, out.URLError = serdeURL(r.URL.RawQuery, v3QueryKeys)
	if r.Method == http.MethodGet {
		out.DB, out.Q, out.Format, out.Params = out.URL["db"], out.URL["q"], out.URL["format"], out.URL["params"]
		out.Error = out.URLError
		return out
	}
	body, err := v3Body(r, raw)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	fields, err := serdeObject(body, v3QueryKeys)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	for key, dst := range map[string]*Raw{"db": &out.DB, "q": &out.Q, "format": &out.Format} {
		v, ok := fields[key]
		if !ok || string(v) == "null" {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			out.Error = fmt.Sprintf("invalid type for %q: %v", key, err)
			return out
		}
		*dst = Raw(s)
	}
	// Option<…> in serde: null is the same as absent.
	if v, ok := fields["params"]; ok && string(v) != "null" {
		out.Params = Raw(v)
	}
	return out
}

func readV3Write(r *http.Request, raw []byte) *V3Write {
	out := &V3Write{}
	out.URL, out.URLError = serdeURL(r.URL.RawQuery, []string{"db", "precision", "accept_partial", "no_sync"})
	b := Body{Gzip: r.Header.Get("Content-Encoding") == "gzip"}
	data, err := v3Body(r, raw)
	if err != nil {
		b.DecodeError = err.Error()
	}
	b.describe(data)
	out.Body = b
	return out
}

// v3Body is read_body: the declared encoding, then every gzip member.
func v3Body(r *http.Request, raw []byte) ([]byte, error) {
	switch enc := r.Header.Values("Content-Encoding"); {
	case len(enc) == 0 || enc[0] == "identity":
		return raw, nil
	case enc[0] == "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("error decoding gzip stream: %v", err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("error decoding gzip stream: %v", err)
		}
		return data, nil
	default:
		return nil, fmt.Errorf("unacceptable content-encoding: %s", enc[0])
	}
}

// serdeObject reads one JSON object with serde's derive rules for a struct
// whose fields are `known`.
func serdeObject(body []byte, known []string) (map[string]json.RawMessage, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("expected a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("expected an object key")
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, err
		}
		isKnown := false
		for _, k := range known {
			isKnown = isKnown || k == key
		}
		if !isKnown {
			continue
		}
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("duplicate field `%s`", key)
		}
		fields[key] = value
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing characters")
	}
	return fields, nil
}

// serdeURL reads a query string as serde_urlencoded does for a struct with
// fields `known` (unknown keys ignored, a repeated known key is an error).
func serdeURL(rawQuery string, known []string) (map[string]Raw, string) {
	out := map[string]Raw{}
	for _, pair := range strings.Split(rawQuery, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, value := formDecode(k), formDecode(v)
		for _, kk := range known {
			if kk != key {
				continue
			}
			if _, dup := out[key]; dup {
				return out, fmt.Sprintf("duplicate field `%s`", key)
			}
			out[key] = Raw(value)
		}
	}
	return out, ""
}

// formDecode is form_urlencoded's decoding: "+" → space, valid "%XX"
// escapes decoded, anything else kept, then lossy UTF-8.
func formDecode(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return rustLossy(b)
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
