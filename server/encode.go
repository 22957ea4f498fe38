package server

// Hand-rolled JSON for the hot path. A trace event carries H × t attention
// probabilities per generated token (4 × 256 floats for the deployed model),
// and the full-attention matrix t × t; encoding/json's reflection over
// [][]float32 would cost more than the model's own step. These encoders append
// to a caller-owned buffer that is reused across steps, and print each float
// with the shortest form that reads back as the same float32 (float32.go:
// strconv's bytes, found faster for probabilities).

import (
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"nielsgpt/engine"
	"nielsgpt/tokenizer"
)

// tokenTable is the loaded model's tokens as responses show them, made once
// per model: for each id its text (the token decoded alone: a byte as UTF-8
// with replacement, a SentencePiece piece as DecodeIds gives it), its display
// (printable as itself, bytes as \xNN, U+2581 as a space) and the JSON
// members `"token_id":N,"token_text":"…","token_display":"…"` ready to copy.
type tokenTable struct {
	tok     tokenizer.Tokenizer
	text    []string
	display []string
	fields  [][]byte
	bytes   [][]byte // each token's share of the text (TokenBytes)
}

func newTokenTable(tok tokenizer.Tokenizer) *tokenTable {
	n := tok.VocabSize()
	t := &tokenTable{tok: tok, text: make([]string, n), display: make([]string, n), fields: make([][]byte, n), bytes: make([][]byte, n)}
	for id := range n {
		t.text[id], t.display[id], t.bytes[id] = tok.Decode([]int{id}), tok.Display(id), tok.TokenBytes(id)
		b := append([]byte(`"token_id":`), strconv.Itoa(id)...)
		b = append(b, `,"token_text":`...)
		b = appendString(b, t.text[id])
		b = append(b, `,"token_display":`...)
		t.fields[id] = appendString(b, t.display[id])
	}
	return t
}

// byteTokens is generation 1's table, the byte vocabulary.
var byteTokens = newTokenTable(tokenizer.Bytes{})

// The engine only reports ids of the model's vocabulary; an id outside it
// would be an engine bug, shown as an empty text rather than a crash.
func (t *tokenTable) textOf(id int) string {
	if id < 0 || id >= len(t.text) {
		return ""
	}
	return t.text[id]
}

func (t *tokenTable) displayOf(id int) string {
	if id < 0 || id >= len(t.display) {
		return ""
	}
	return t.display[id]
}

func (t *tokenTable) appendTokenFields(b []byte, id int) []byte {
	if id >= 0 && id < len(t.fields) {
		return append(b, t.fields[id]...)
	}
	b = append(b, `"token_id":`...)
	b = strconv.AppendInt(b, int64(id), 10)
	return append(b, `,"token_text":"","token_display":""`...)
}

// appendString writes s as a JSON string. s is valid UTF-8 here (token texts
// come from the engine's decoder), so only quotes, backslashes and control
// characters need escaping.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}

// appendFloat writes x as float32's shortest round-trip form. A non-finite
// value (an engine fault) becomes null so the event stays valid JSON.
func appendFloat(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return append(b, "null"...)
	}
	return appendFloat32(b, float32(x))
}

func appendFloatRow(b []byte, row []float32) []byte {
	b = append(b, '[')
	for i, x := range row {
		if i > 0 {
			b = append(b, ',')
		}
		if x != x || x > math.MaxFloat32 || x < -math.MaxFloat32 {
			b = append(b, "null"...)
			continue
		}
		b = appendFloat32(b, x)
	}
	return append(b, ']')
}

func appendMatrix(b []byte, rows [][]float32) []byte {
	b = append(b, '[')
	for i, row := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloatRow(b, row)
	}
	return append(b, ']')
}

// appendTokenEvent writes one SSE `token` event.
func (t *tokenTable) appendTokenEvent(b []byte, step *engine.Step) []byte {
	b = append(b, "event: token\ndata: {\"step\":"...)
	b = strconv.AppendInt(b, int64(step.Index), 10)
	b = append(b, ',')
	b = t.appendTokenFields(b, step.TokenID)
	return append(b, "}\n\n"...)
}

// appendTraceEvent writes one SSE `trace` event.
func (t *tokenTable) appendTraceEvent(b []byte, step *engine.Step) []byte {
	b = append(b, "event: trace\ndata: {\"step\":"...)
	b = strconv.AppendInt(b, int64(step.Index), 10)
	b = append(b, `,"entropy":`...)
	b = appendFloat(b, step.Entropy)
	b = append(b, `,"topk":`...)
	b = t.appendCandidates(b, step.Candidates)
	b = append(b, `,"attn":`...)
	if step.Attn == nil {
		b = append(b, "[]"...)
	} else {
		b = appendMatrix(b, step.Attn)
	}
	// Present only when the request asked for them; an empty trace_layers
	// asks for nothing.
	if len(step.Layers) > 0 {
		b = append(b, `,"layers":`...)
		b = appendLayers(b, step.Layers)
	}
	if step.Lens != nil {
		b = append(b, `,"lens":`...)
		b = t.appendLens(b, step.Lens)
	}
	return append(b, "}\n\n"...)
}

// appendCandidates writes a list of {"token_id", "token_text",
// "token_display", "prob"}.
func (t *tokenTable) appendCandidates(b []byte, cands []engine.Candidate) []byte {
	b = append(b, '[')
	for i, cand := range cands {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = t.appendTokenFields(b, cand.TokenID)
		b = append(b, `,"prob":`...)
		b = appendFloat(b, cand.Prob)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendLayers writes [{"layer": l, "attn": [[t floats] × H]}, ...].
func appendLayers(b []byte, layers []engine.LayerAttn) []byte {
	b = append(b, '[')
	for i, l := range layers {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"layer":`...)
		b = strconv.AppendInt(b, int64(l.Layer), 10)
		b = append(b, `,"attn":`...)
		b = appendMatrix(b, l.Attn)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendLens writes [{"layer": l, "entropy": e, "topk": [...]}, ...].
func (t *tokenTable) appendLens(b []byte, lens []engine.LensLayer) []byte {
	b = append(b, '[')
	for i, l := range lens {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"layer":`...)
		b = strconv.AppendInt(b, int64(l.Layer), 10)
		b = append(b, `,"entropy":`...)
		b = appendFloat(b, l.Entropy)
		b = append(b, `,"topk":`...)
		b = t.appendCandidates(b, l.Candidates)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendJSONEvent writes an SSE event whose data is v in compact JSON; for
// the once-per-stream events (done, error), where reflection costs nothing
// that matters.
func appendJSONEvent(b []byte, name string, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil { // only plain strings go through here; keep the stream well-formed regardless
		data = []byte(`{"error":"encoding failed","code":"internal_error"}`)
		name = "error"
	}
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// appendFullAttn writes the /inspect/full_attn response body: the matrix of
// head of the one layer asked for.
func (t *tokenTable) appendFullAttn(b []byte, layer, head int, full *engine.FullAttn) []byte {
	b = append(b, `{"layer":`...)
	b = strconv.AppendInt(b, int64(layer), 10)
	b = append(b, `,"head":`...)
	b = strconv.AppendInt(b, int64(head), 10)
	b = append(b, ',')
	b = t.appendTokenLists(b, full.TokenIDs)
	b = append(b, `,"attn":`...)
	b = appendMatrix(b, full.Attn[0][head])
	return append(b, '}')
}
