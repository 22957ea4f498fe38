package server

// Request bodies of the OpenAI-compatible routes (docs/API.md, OpenAI API):
// /v1/chat/completions and /v1/completions, in OpenAI's own field names, read
// into one oaiRequest. Unlike the original's endpoints, fields this server
// does not know are ignored (OpenAI's clients send many) and named in the
// request log; a known field with a bad value is a 400 naming it in `param`.

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"

	"nielsgpt/engine"
	"nielsgpt/gguf"
)

// OpenAI's defaults where they differ from the original's.
const (
	oaiDefaultTemperature  = 1.0
	oaiMaxTemperature      = 2.0
	oaiDefaultChatTokens   = 256 // OpenAI's own default is "up to the context"
	oaiDefaultLegacyTokens = 16  // the legacy completions API's documented default
	oaiMaxStops            = 4
	oaiMaxLegacyLogprobs   = 5
)

var (
	oaiChatFields = []string{"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
		"top_p", "seed", "stop", "n", "stream", "stream_options", "logprobs", "top_logprobs", "nielsgpt"}
	oaiCompletionFields = []string{"model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop",
		"n", "stream", "stream_options", "logprobs", "echo", "nielsgpt"}
	oaiMessageFields   = []string{"role", "content", "name"}
	oaiExtensionFields = []string{"trace_layer", "trace_layers", "logit_lens", "ablate"}
)

// oaiRequest is a validated /v1 request, chat or legacy completion.
type oaiRequest struct {
	gen          engine.GenerateRequest
	chat         bool
	stream       bool
	includeUsage bool
	logprobs     bool // answer with log-probabilities
	topLogprobs  int
	echo         bool     // completions: the prompt comes back first, scored
	ignored      []string // unknown fields, for the request log
	// traced: the request carried the nielsgpt extension, so every choice
	// carries each step's internals.
	traced bool
}

// prompt is what MAX_PROMPT_BYTES applies to: the text, or the chat's
// transcript as generation 1 writes it.
func (r oaiRequest) prompt() []byte {
	if r.chat {
		return engine.FormatTranscript(r.gen.Messages)
	}
	return r.gen.Prompt
}

func parseChatCompletion(body []byte, lim limits) (oaiRequest, []string, error) {
	req, err := parseChatCompletionFields(body, lim)
	return req, req.ignored, err
}

func parseChatCompletionFields(body []byte, lim limits) (oaiRequest, error) {
	fields, req, err := oaiCommon(body, lim, oaiChatFields)
	if err != nil {
		return req, err
	}
	req.chat = true
	messages, err := oaiMessages(fields["messages"], &req.ignored)
	if err != nil {
		return req, err
	}
	req.gen.Messages = messages
	maxField := "max_tokens"
	if _, ok := fields["max_completion_tokens"]; ok {
		maxField = "max_completion_tokens" // the newer name wins, as in OpenAI's API
	}
	maxNew, err := rangeField(fields, maxField, false, oaiDefaultChatTokens, 0, int64(lim.maxNewTokens))
	if err != nil {
		return req, withParam(maxField, err)
	}
	req.gen.MaxNewTokens = int(maxNew)
	if req.logprobs, err = oaiBool(fields, "logprobs"); err != nil {
		return req, err
	}
	top, err := rangeField(fields, "top_logprobs", false, 0, 0, engine.MaxTopLogprobs)
	if err != nil {
		return req, withParam("top_logprobs", err)
	}
	if top > 0 && !req.logprobs {
		return req, &validationError{msg: "top_logprobs needs logprobs: true", param: "top_logprobs"}
	}
	req.topLogprobs = int(top)
	req.gen.Logprobs, req.gen.TopLogprobs = req.logprobs, req.topLogprobs
	return req, nil
}

func parseCompletion(body []byte, lim limits) (oaiRequest, []string, error) {
	req, err := parseCompletionFields(body, lim)
	return req, req.ignored, err
}

func parseCompletionFields(body []byte, lim limits) (oaiRequest, error) {
	fields, req, err := oaiCommon(body, lim, oaiCompletionFields)
	if err != nil {
		return req, err
	}
	if req.gen.Prompt, err = oaiPrompt(fields["prompt"], lim.model.Generation() == 1); err != nil {
		return req, err
	}
	maxNew, err := rangeField(fields, "max_tokens", false, oaiDefaultLegacyTokens, 0, int64(lim.maxNewTokens))
	if err != nil {
		return req, withParam("max_tokens", err)
	}
	req.gen.MaxNewTokens = int(maxNew)
	if req.echo, err = oaiBool(fields, "echo"); err != nil {
		return req, err
	}
	// logprobs is an integer here (how many candidates), null or absent for none.
	if raw, ok := fields["logprobs"]; ok && string(raw) != "null" {
		n, ok := jsonInt(raw)
		if !ok || n < 0 || n > oaiMaxLegacyLogprobs {
			return req, &validationError{msg: "logprobs must be null or an integer in [0, 5]", param: "logprobs"}
		}
		req.logprobs, req.topLogprobs = true, int(n)
	}
	req.gen.Logprobs, req.gen.TopLogprobs = req.logprobs, req.topLogprobs
	return req, nil
}

// oaiCommon reads what both routes share: the body itself, sampling, stop,
// n, stream and the nielsgpt extension.
func oaiCommon(body []byte, lim limits, known []string) (map[string]json.RawMessage, oaiRequest, error) {
	var req oaiRequest
	if len(body) == 0 {
		return nil, req, invalidf("request body is empty; expected a JSON object")
	}
	if err := checkRawJSON(body); err != nil {
		return nil, req, err
	}
	fields, ignored, err := parseObjectLenient(body, "request body", known)
	if err != nil {
		return nil, req, err
	}
	req.ignored = ignored
	if raw, ok := fields["model"]; ok {
		if _, isString := stringField(raw); !isString {
			return nil, req, &validationError{msg: "model must be a string", param: "model"}
		}
	}
	if raw, ok := fields["n"]; ok && string(raw) != "null" {
		if n, isInt := jsonInt(raw); !isInt || n != 1 {
			return nil, req, &validationError{msg: "n must be 1: this server returns one choice per request", param: "n"}
		}
	}
	if req.gen.Sampling, err = oaiSampling(fields); err != nil {
		return nil, req, err
	}
	if req.gen.Stop, err = oaiStops(fields["stop"]); err != nil {
		return nil, req, err
	}
	if req.stream, err = oaiBool(fields, "stream"); err != nil {
		return nil, req, err
	}
	if req.includeUsage, err = oaiStreamOptions(fields["stream_options"]); err != nil {
		return nil, req, err
	}
	if err = oaiExtension(fields["nielsgpt"], lim.model, &req); err != nil {
		return nil, req, err
	}
	// WINDOW_HOP applies here as on the original endpoints.
	if req.gen.WindowHop, err = windowHopField(nil, lim); err != nil {
		return nil, req, err
	}
	return fields, req, nil
}

// oaiSampling reads OpenAI's sampling fields: temperature, top_p and seed
// (its API has no top_k, so none filters by rank).
func oaiSampling(fields map[string]json.RawMessage) (engine.Sampling, error) {
	s := engine.Sampling{Temperature: oaiDefaultTemperature}
	var err error
	if s.Temperature, err = oaiNumber(fields, "temperature", oaiDefaultTemperature, 0, oaiMaxTemperature); err != nil {
		return s, err
	}
	if s.TopP, err = oaiNumber(fields, "top_p", 1, 0, 1); err != nil {
		return s, err
	}
	if raw, ok := fields["top_p"]; ok && string(raw) != "null" && s.TopP == 0 {
		return s, &validationError{msg: "top_p must be in (0, 1]", param: "top_p"}
	}
	s.Seed, err = oaiSeed(fields["seed"])
	return s, err
}

// oaiSeed: without a seed OpenAI's sampling is not reproducible, so neither
// is ours; with one, the same request gives the same tokens.
func oaiSeed(raw json.RawMessage) (int64, error) {
	if raw == nil || string(raw) == "null" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		return int64(binary.LittleEndian.Uint64(b[:])), nil
	}
	n, ok := jsonInt(raw)
	if !ok {
		return 0, &validationError{msg: "seed must be an integer", param: "seed"}
	}
	return n, nil
}

// oaiNumber reads an optional number in [lo, hi]; null means the default.
func oaiNumber(fields map[string]json.RawMessage, name string, def, lo, hi float64) (float64, error) {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return def, nil
	}
	x, err := strconv.ParseFloat(string(raw), 64)
	if !isJSONNumber(raw) || err != nil || math.IsNaN(x) || x < lo || x > hi {
		return 0, &validationError{msg: name + " must be a number in [" + strconv.FormatFloat(lo, 'g', -1, 64) +
			", " + strconv.FormatFloat(hi, 'g', -1, 64) + "]", param: name}
	}
	return x, nil
}

// oaiBool reads an optional boolean; null means false.
func oaiBool(fields map[string]json.RawMessage, name string) (bool, error) {
	switch raw := string(fields[name]); raw {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, &validationError{msg: name + " must be a boolean", param: name}
}

func oaiStreamOptions(raw json.RawMessage) (bool, error) {
	if raw == nil || string(raw) == "null" {
		return false, nil
	}
	fields, _, err := parseObjectLenient(raw, "stream_options", []string{"include_usage"})
	if err != nil {
		return false, withParam("stream_options", err)
	}
	include, err := oaiBool(fields, "include_usage")
	return include, withParam("stream_options.include_usage", err)
}

// oaiStops reads stop: a string or a list of up to four non-empty strings.
func oaiStops(raw json.RawMessage) ([][]byte, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	bad := &validationError{msg: "stop must be a string or a list of up to 4 non-empty strings", param: "stop"}
	var list []string
	if s, ok := stringField(raw); ok {
		list = []string{s}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, bad
	}
	if len(list) > oaiMaxStops {
		return nil, bad
	}
	stops := make([][]byte, 0, len(list))
	for _, s := range list {
		if s == "" {
			return nil, bad
		}
		stops = append(stops, []byte(s))
	}
	return stops, nil
}

// oaiExtension reads the nielsgpt object: any of trace_layer (that layer's
// attention row), trace_layers, logit_lens and ablate, as on /chat/stream.
// Its presence asks every choice for each step's internals.
func oaiExtension(raw json.RawMessage, model gguf.ModelConfig, req *oaiRequest) error {
	req.gen.TraceLayer = -1
	if raw == nil || string(raw) == "null" {
		return nil
	}
	fields, err := parseNested(raw, "nielsgpt", oaiExtensionFields, &req.ignored)
	if err != nil {
		return withParam("nielsgpt", err)
	}
	req.traced = true
	if _, ok := fields["trace_layer"]; ok {
		layer, err := rangeField(fields, "trace_layer", true, 0, 0, int64(model.Layers-1))
		if err != nil {
			return withParam("nielsgpt.trace_layer", &validationError{msg: "nielsgpt." + err.Error()})
		}
		req.gen.TraceLayer = int(layer)
	}
	return parseTraceExtras(fields, "nielsgpt.", model, &req.gen, &req.ignored)
}

// oaiMessages reads OpenAI's messages: content is a string or a list of
// text parts; "developer" is OpenAI's newer name for the system role.
func oaiMessages(raw json.RawMessage, ignored *[]string) ([]engine.Message, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || len(items) == 0 {
		return nil, &validationError{msg: "messages must be a non-empty list of {role, content} objects", param: "messages"}
	}
	messages := make([]engine.Message, len(items))
	for i, item := range items {
		param := "messages[" + strconv.Itoa(i) + "]"
		fields, err := parseNested(item, param, oaiMessageFields, ignored)
		if err != nil {
			return nil, withParam(param, err)
		}
		role, _ := stringField(fields["role"])
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant":
		default:
			return nil, &validationError{msg: param + ".role must be one of system, developer, user, assistant", param: param + ".role"}
		}
		content, err := oaiContent(fields["content"], param+".content")
		if err != nil {
			return nil, err
		}
		messages[i] = engine.Message{Role: role, Content: content}
	}
	return messages, nil
}

func oaiContent(raw json.RawMessage, param string) (string, error) {
	if s, ok := stringField(raw); ok {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil || parts == nil {
		return "", &validationError{msg: param + " must be a string or a list of text parts", param: param}
	}
	var text []byte
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", &validationError{msg: param + ": only text parts are supported", param: param}
		}
		text = append(text, *p.Text...)
	}
	return string(text), nil
}

// oaiPrompt reads the legacy prompt: a string, a list of one string, or
// token ids (bytes, for this byte-level model) as a list or a list of one list.
// oaiPrompt reads a completion's prompt as text. Token ids are bytes, so a
// list of them is taken only for a byte-level model (byteIDs).
func oaiPrompt(raw json.RawMessage, byteIDs bool) ([]byte, error) {
	bad := &validationError{msg: "prompt must be a non-empty string, a list of one string, or a list of token ids in [0, 255]", param: "prompt"}
	if s, ok := stringField(raw); ok {
		if s == "" {
			return nil, bad
		}
		return []byte(s), nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		if len(strs) != 1 || strs[0] == "" {
			return nil, bad
		}
		return []byte(strs[0]), nil
	}
	var ids []int
	if err := json.Unmarshal(raw, &ids); err != nil {
		var nested [][]int
		if err := json.Unmarshal(raw, &nested); err != nil || len(nested) != 1 {
			return nil, bad
		}
		ids = nested[0]
	}
	if len(ids) == 0 {
		return nil, bad
	}
	if !byteIDs {
		return nil, &validationError{msg: "prompt as token ids is only taken by a byte-level (generation-1) model; send the text", param: "prompt"}
	}
	prompt := make([]byte, len(ids))
	for i, id := range ids {
		if id < 0 || id > 255 {
			return nil, bad
		}
		prompt[i] = byte(id)
	}
	return prompt, nil
}

// withParam names the field a validation error is about, for OpenAI's param.
func withParam(param string, err error) error {
	if v, ok := err.(*validationError); ok && v.param == "" {
		return &validationError{msg: v.msg, param: param}
	}
	return err
}
