// Byte-exact reporting of values that may not be valid UTF-8.
//
// InfluxDB keeps form values, database names and query text as Go strings,
// which are byte strings: invalid UTF-8 survives until the InfluxQL scanner
// reads the text rune by rune (bufio.Reader.ReadRune, one U+FFFD per invalid
// byte). encoding/json would silently replace invalid bytes when we answer,
// so every such value is reported through Raw, which keeps the bytes.

package main

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"
)

// Raw is a Go string reported byte for byte: a JSON string when it is
// valid UTF-8, otherwise {"invalid_utf8_b64": "<base64 of the bytes>"}.
type Raw string

// MarshalJSON implements json.Marshaler.
func (r Raw) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(r)) {
		return json.Marshal(string(r))
	}
	return json.Marshal(map[string]string{
		"invalid_utf8_b64": base64.StdEncoding.EncodeToString([]byte(r)),
	})
}

// runes is the text as a rune reader sees it: every byte that does not
// start a valid UTF-8 sequence becomes one U+FFFD (the semantics of
// bufio.Reader.ReadRune and of ranging over a string, which is how the
// InfluxQL scanner in influxdata/influxql scanner.go reads its input).
func runes(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		out = append(out, r)
	}
	return string(out)
}

// rustLossy is String::from_utf8_lossy: each maximal invalid subsequence
// (Unicode "substitution of maximal subparts") becomes one U+FFFD. Used to
// emulate InfluxDB 3 (Rust), whose URL parameters go through
// form_urlencoded's lossy decoding.
func rustLossy(b []byte) string {
	out := make([]rune, 0, len(b))
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			out = append(out, r)
			i += size
			continue
		}
		out = append(out, utf8.RuneError)
		i += maximalSubpart(b[i:])
	}
	return string(out)
}

// maximalSubpart is the length (at least 1) of the longest prefix of b that
// is a prefix of some valid UTF-8 sequence, given b does not start with one.
func maximalSubpart(b []byte) int {
	lead := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case lead >= 0xC2 && lead <= 0xDF:
		need = 1
	case lead == 0xE0:
		need, lo = 2, 0xA0
	case lead >= 0xE1 && lead <= 0xEC, lead == 0xEE, lead == 0xEF:
		need = 2
	case lead == 0xED:
		need, hi = 2, 0x9F
	case lead == 0xF0:
		need, lo = 3, 0x90
	case lead >= 0xF1 && lead <= 0xF3:
		need = 3
	case lead == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		c := b[n]
		if k == 0 {
			if c < lo || c > hi {
				return n
			}
		} else if c < 0x80 || c > 0xBF {
			return n
		}
		n++
	}
	return n
}

// rawList converts a slice of Go strings.
func rawList(vs []string) []Raw {
	out := make([]Raw, len(vs))
	for i, v := range vs {
		out[i] = Raw(v)
	}
	return out
}

// rawValues converts url.Values-like maps.
func rawValues(m map[string][]string) map[string][]Raw {
	out := make(map[string][]Raw, len(m))
	for k, vs := range m {
		// Keys can hold invalid UTF-8 too; JSON object keys cannot, so
		// such keys are reported base64-prefixed.
		key := k
		if !utf8.ValidString(k) {
			key = "invalid_utf8_b64:" + base64.StdEncoding.EncodeToString([]byte(k))
		}
		out[key] = rawList(vs)
	}
	return out
}
