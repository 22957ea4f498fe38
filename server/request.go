package server

// Request bodies: reading them within bounds and turning them into engine
// requests, or into one clear message naming the field that is wrong.
//
// Bodies are parsed field by field from json.RawMessage rather than into a
// tagged struct so that every message can name its field, absent can be told
// apart from null (top_k: null means "no filtering", absent means 50), and an
// unknown field can be named in the request's log line. Unknown fields are
// otherwise ignored, as the original's request models ignored extras:
// clients that send a field this server does not know (a newer client, a
// front end's bookkeeping) keep working. Before any of that,
// the raw bytes are checked for what encoding/json would otherwise mangle
// quietly: invalid UTF-8 and unpaired UTF-16 surrogate escapes, both of which
// it replaces with U+FFFD.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"nielsgpt/engine"
	"nielsgpt/gguf"
)

// Defaults the original service had (docs/API.md).
const (
	defaultMaxNewTokens     = 256
	defaultTemperature      = 0.9
	defaultTopK             = 50
	defaultSeed             = 42
	defaultInspectNewTokens = 0
	// maxNesting bounds how deep a body's arrays and objects may go. Our
	// deepest valid body is three levels (object, messages, message).
	maxNesting = 16
	// maxTemperature matches what the engine accepts: beyond it the scaled
	// logits are all zero anyway.
	maxTemperature = 1e300
)

// validationError becomes a 422 with {"detail": msg}, or on the OpenAI
// routes a 400 whose param names the field.
type validationError struct{ msg, param string }

func (e *validationError) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &validationError{msg: fmt.Sprintf(format, args...)}
}

// limits are the bounds a request is validated against: the loaded model's
// shape and the server's own caps.
type limits struct {
	model        gguf.ModelConfig
	maxNewTokens int
	windowHop    int // WINDOW_HOP: window_hop when a request leaves it out
	// maxAttentionFloats is MAX_ATTENTION_FLOATS: the most probabilities
	// one /inspect/attention answer may hold.
	maxAttentionFloats int
}

var (
	chatFields = []string{"messages", "max_new_tokens", "temperature", "top_k", "seed", "trace_layer", "window_hop",
		"trace_layers", "logit_lens", "ablate", "top_p", "repetition_penalty"}
	fullAttnFields = []string{"messages", "trace_layer", "head", "seed", "max_new_tokens", "window_hop", "ablate",
		"top_p", "repetition_penalty"}
	messageFields = []string{"role", "content"}
	headFields    = []string{"layer", "head"}
)

// parseChatRequest validates a POST /chat/stream body.
func parseChatRequest(body []byte, lim limits) (engine.GenerateRequest, []string, error) {
	fields, ignored, err := parseBody(body, chatFields)
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	messages, err := parseMessages(fields["messages"], &ignored)
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	traceLayer, err := rangeField(fields, "trace_layer", true, 0, 0, int64(lim.model.Layers-1))
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	maxNew, err := rangeField(fields, "max_new_tokens", false, defaultMaxNewTokens, 0, int64(lim.maxNewTokens))
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	sampling, err := parseSampling(fields, lim.model.Vocab)
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	hop, err := windowHopField(fields, lim)
	if err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	req := engine.GenerateRequest{
		Messages:     messages,
		MaxNewTokens: int(maxNew),
		Sampling:     sampling,
		TraceLayer:   int(traceLayer),
		WindowHop:    hop,
	}
	if err := parseTraceExtras(fields, "", lim.model, &req, &ignored); err != nil {
		return engine.GenerateRequest{}, nil, err
	}
	return req, ignored, nil
}

// parseTraceExtras reads trace_layers, logit_lens and ablate into req. prefix
// is what the fields' names start with in messages ("nielsgpt." on /v1).
func parseTraceExtras(fields map[string]json.RawMessage, prefix string, model gguf.ModelConfig, req *engine.GenerateRequest, ignored *[]string) error {
	var err error
	if raw, ok := fields["trace_layers"]; ok {
		if req.TraceLayers, err = parseLayers(raw, prefix+"trace_layers", model.Layers); err != nil {
			return err
		}
	}
	if req.LogitLens, err = boolField(fields, "logit_lens", prefix+"logit_lens"); err != nil {
		return err
	}
	req.Ablate, err = parseAblate(fields["ablate"], prefix+"ablate", model, ignored)
	return err
}

// fullAttnRequest is a POST /inspect/full_attn body: the engine's request
// for its one layer, and the head whose matrix the answer holds.
type fullAttnRequest struct {
	engine.FullAttnRequest
	head int
}

// parseFullAttnRequest validates a POST /inspect/full_attn body. Tokens
// generated before the matrix is taken use the default sampling settings with
// the request's seed.
func parseFullAttnRequest(body []byte, lim limits) (fullAttnRequest, []string, error) {
	fields, ignored, err := parseBody(body, fullAttnFields)
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	messages, err := parseMessages(fields["messages"], &ignored)
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	layer, err := rangeField(fields, "trace_layer", true, 0, 0, int64(lim.model.Layers-1))
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	head, err := rangeField(fields, "head", true, 0, 0, int64(lim.model.Heads-1))
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	seed, err := seedField(fields)
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	sampling := engine.Sampling{Temperature: defaultTemperature, TopK: min(defaultTopK, lim.model.Vocab), Seed: seed}
	if err := parseNucleusAndPenalty(fields, &sampling); err != nil {
		return fullAttnRequest{}, nil, err
	}
	maxNew, err := rangeField(fields, "max_new_tokens", false, defaultInspectNewTokens, 0, int64(lim.maxNewTokens))
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	hop, err := windowHopField(fields, lim)
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	ablate, err := parseAblate(fields["ablate"], "ablate", lim.model, &ignored)
	if err != nil {
		return fullAttnRequest{}, nil, err
	}
	return fullAttnRequest{FullAttnRequest: engine.FullAttnRequest{
		Messages:     messages,
		MaxNewTokens: int(maxNew),
		Sampling:     sampling,
		Layers:       []int{int(layer)},
		Ablate:       ablate,
		WindowHop:    hop,
	}, head: int(head)}, ignored, nil
}

// windowHopField reads window_hop (an extension, docs/API.md): 1..T-1 for the
// loaded model, WINDOW_HOP when absent. A WINDOW_HOP beyond T-1 (the setting
// is read before the model is known) means the largest hop this model has.
func windowHopField(fields map[string]json.RawMessage, lim limits) (int, error) {
	hop, err := rangeField(fields, "window_hop", false, int64(max(lim.windowHop, 1)), 1, int64(lim.model.Context-1))
	return int(hop), err
}

// parseBody checks the raw bytes, then splits the top-level object into its
// fields; ignored names, sorted, the members not in known.
func parseBody(body []byte, known []string) (fields map[string]json.RawMessage, ignored []string, err error) {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, nil, invalidf("request body is empty; expected a JSON object")
	}
	if err := checkRawJSON(body); err != nil {
		return nil, nil, err
	}
	return parseObjectLenient(body, "request body", known)
}

// checkRawJSON refuses what encoding/json would accept but alter or spend
// effort on: bytes that are not UTF-8, \u escapes of unpaired surrogates,
// and nesting deeper than any valid request has. Syntax errors are left to
// the decoder, which reports them with an offset.
func checkRawJSON(body []byte) error {
	if !utf8.Valid(body) {
		at := 0
		for at < len(body) {
			r, n := utf8.DecodeRune(body[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return invalidf("request body is not valid UTF-8 (bad byte 0x%02x at offset %d)", body[at], at)
	}
	depth, inString := 0, false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if inString {
			switch c {
			case '"':
				inString = false
			case '\\':
				if i+1 < len(body) && body[i+1] == 'u' {
					r, ok := hex4(body, i+2)
					if !ok {
						return nil // malformed escape: the decoder says where
					}
					switch {
					case r >= 0xD800 && r <= 0xDBFF:
						if i+11 < len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
							if low, ok := hex4(body, i+8); ok && low >= 0xDC00 && low <= 0xDFFF {
								i += 11
								continue
							}
						}
						return invalidf("request body contains an unpaired UTF-16 surrogate \\u%04x at offset %d (not valid Unicode)", r, i)
					case r >= 0xDC00 && r <= 0xDFFF:
						return invalidf("request body contains an unpaired UTF-16 surrogate \\u%04x at offset %d (not valid Unicode)", r, i)
					}
					i += 5
					continue
				}
				i++ // the escaped character, which may be a quote
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > maxNesting {
				return invalidf("request body is nested too deeply (more than %d levels)", maxNesting)
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}

// parseNested reads an object inside the body (a message, an ablated head);
// its unknown members join ignored under their full name ("messages[2].name").
func parseNested(raw []byte, what string, known []string, ignored *[]string) (map[string]json.RawMessage, error) {
	fields, unknown, err := parseObjectLenient(raw, what, known)
	if err != nil {
		return nil, err
	}
	for _, name := range unknown {
		*ignored = append(*ignored, what+"."+name)
	}
	return fields, nil
}

// parseObjectLenient reads a JSON object and names, sorted, the members that
// are not in known, for callers that ignore them.
func parseObjectLenient(raw []byte, what string, known []string) (fields map[string]json.RawMessage, unknown []string, err error) {
	if err := json.Unmarshal(raw, &fields); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return nil, nil, invalidf("%s is not valid JSON: %s (at offset %d)", what, syntax.Error(), syntax.Offset)
		}
		if strings.Contains(err.Error(), "unexpected end of JSON input") {
			return nil, nil, invalidf("%s is not valid JSON: it ends too early", what)
		}
		return nil, nil, invalidf("%s must be a JSON object", what)
	}
	if fields == nil {
		return nil, nil, invalidf("%s must be a JSON object", what)
	}
	for key := range fields {
		if !slices.Contains(known, key) {
			unknown = append(unknown, key)
		}
	}
	slices.Sort(unknown)
	return fields, unknown, nil
}

func parseMessages(raw json.RawMessage, ignored *[]string) ([]engine.Message, error) {
	if raw == nil {
		return nil, invalidf("messages is required")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return nil, invalidf("messages must be a list of {role, content} objects")
	}
	if len(items) == 0 {
		return nil, invalidf("messages must not be empty")
	}
	messages := make([]engine.Message, len(items))
	for i, item := range items {
		what := fmt.Sprintf("messages[%d]", i)
		fields, err := parseNested(item, what, messageFields, ignored)
		if err != nil {
			return nil, err
		}
		role, ok := stringField(fields["role"])
		switch {
		case fields["role"] == nil:
			return nil, invalidf("%s.role is required", what)
		case !ok || (role != "system" && role != "user" && role != "assistant"):
			return nil, invalidf("%s.role must be one of system, user, assistant", what)
		}
		content, ok := stringField(fields["content"])
		switch {
		case fields["content"] == nil:
			return nil, invalidf("%s.content is required", what)
		case !ok:
			return nil, invalidf("%s.content must be a string", what)
		}
		messages[i] = engine.Message{Role: role, Content: content}
	}
	return messages, nil
}

func stringField(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonInt reads a JSON number that is an integer within int64. 3.0 and 1e2
// count (they are integers written another way, as Python's validators
// accept); 2.5, strings, booleans and null do not.
func jsonInt(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

// rangeField reads an integer field in [lo, hi], or def when the field is
// absent and not required. The default is held to the range too: an
// operator who lowers MAX_NEW_TOKENS below the default of 256 means it for
// requests that leave the field out as much as for those that ask.
func rangeField(fields map[string]json.RawMessage, name string, required bool, def, lo, hi int64) (int64, error) {
	raw, present := fields[name]
	if !present {
		if required {
			return 0, invalidf("%s is required", name)
		}
		return min(max(def, lo), hi), nil
	}
	n, ok := jsonInt(raw)
	switch {
	case !ok:
		return 0, invalidf("%s must be an integer in [%d, %d]", name, lo, hi)
	case n < lo || n > hi:
		return 0, invalidf("%s must be in [%d, %d]", name, lo, hi)
	}
	return n, nil
}

func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}

func seedField(fields map[string]json.RawMessage) (int64, error) {
	raw, present := fields["seed"]
	if !present {
		return defaultSeed, nil
	}
	n, ok := jsonInt(raw)
	if !ok {
		return 0, invalidf("seed must be an integer in [%d, %d]", int64(math.MinInt64), int64(math.MaxInt64))
	}
	return n, nil
}

// parseSampling reads temperature, top_k, top_p, repetition_penalty and seed.
// top_k above the vocabulary keeps every token, so it is clamped to the
// vocabulary rather than refused.
func parseSampling(fields map[string]json.RawMessage, vocab int) (engine.Sampling, error) {
	s := engine.Sampling{Temperature: defaultTemperature, TopK: min(defaultTopK, vocab), Seed: defaultSeed}
	if raw, present := fields["temperature"]; present {
		t, err := strconv.ParseFloat(string(raw), 64)
		if !isJSONNumber(raw) || err != nil || math.IsNaN(t) || t < 0 || t > maxTemperature {
			return s, invalidf("temperature must be a finite number >= 0 (at most %g)", float64(maxTemperature))
		}
		s.Temperature = t
	}
	if raw, present := fields["top_k"]; present {
		if string(raw) == "null" {
			s.TopK = 0
		} else {
			k, ok := jsonInt(raw)
			if !ok || k < 1 {
				return s, invalidf("top_k must be null or an integer >= 1")
			}
			s.TopK = int(min(k, int64(vocab)))
		}
	}
	if err := parseNucleusAndPenalty(fields, &s); err != nil {
		return s, err
	}
	seed, err := seedField(fields)
	if err != nil {
		return s, err
	}
	s.Seed = seed
	return s, nil
}

// parseNucleusAndPenalty reads top_p (0 < p <= 1; absent or null: off) and
// repetition_penalty (a finite number > 0; absent or null: off) into s.
func parseNucleusAndPenalty(fields map[string]json.RawMessage, s *engine.Sampling) error {
	if raw, present := fields["top_p"]; present && string(raw) != "null" {
		p, err := strconv.ParseFloat(string(raw), 64)
		if !isJSONNumber(raw) || err != nil || !(p > 0 && p <= 1) {
			return invalidf("top_p must be a number in (0, 1]")
		}
		s.TopP = p
	}
	if raw, present := fields["repetition_penalty"]; present && string(raw) != "null" {
		r, err := strconv.ParseFloat(string(raw), 64)
		if !isJSONNumber(raw) || err != nil || !(r > 0) || math.IsInf(r, 0) {
			return invalidf("repetition_penalty must be a finite number > 0 (1 is off)")
		}
		s.RepetitionPenalty = r
	}
	return nil
}
