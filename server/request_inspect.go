package server

// The fields that look inside the model (deeper traces, the logit lens,
// head ablation) and the bodies of the two inspection endpoints that take
// them, POST /inspect/attention and POST /inspect/score. Lists are read
// element by element with a bound on their length: a list of a million
// items is refused at the first item past the bound, none of them held.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"nielsgpt/engine"
	"nielsgpt/gguf"
)

const (
	// defaultScoreTopK is how many candidates /inspect/score reports per
	// position when the request leaves top_k out.
	defaultScoreTopK = 5
)

var (
	attentionFields = []string{"messages", "layers", "seed", "max_new_tokens", "ablate", "window_hop"}
	scoreFields     = []string{"text", "messages", "top_k", "ablate"}
)

// invalidParam is a validation error about one field, named in param for
// the OpenAI routes' error shape as well as in the message.
func invalidParam(param, format string, args ...any) error {
	return &validationError{msg: fmt.Sprintf(format, args...), param: param}
}

// jsonList reads raw as a JSON array of at most limit items. ok is false
// when raw is not an array or holds more than limit items; reading stops
// at the first item past the bound.
func jsonList(raw json.RawMessage, limit int) (items []json.RawMessage, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, false
	}
	items = []json.RawMessage{}
	for dec.More() {
		if len(items) == limit {
			return nil, false
		}
		var item json.RawMessage
		if err := dec.Decode(&item); err != nil {
			return nil, false
		}
		items = append(items, item)
	}
	return items, true
}

// parseLayers reads a list of distinct layer indices or the string "all"
// (every layer, in order). name is the field's name in messages.
func parseLayers(raw json.RawMessage, name string, layers int) ([]int, error) {
	if s, ok := stringField(raw); ok {
		if s != "all" {
			return nil, invalidParam(name, `%s must be "all" or a list of distinct layer indices in [0, %d], not the string %q`, name, layers-1, clip(s, 40))
		}
		all := make([]int, layers)
		for l := range all {
			all[l] = l
		}
		return all, nil
	}
	items, ok := jsonList(raw, layers)
	if !ok {
		return nil, invalidParam(name, `%s must be "all" or a list of distinct layer indices in [0, %d] (at most %d of them)`, name, layers-1, layers)
	}
	out := make([]int, len(items))
	for i, item := range items {
		what := fmt.Sprintf("%s[%d]", name, i)
		l, err := indexValue(item, what, layers)
		if err != nil {
			return nil, err
		}
		if j := slices.Index(out[:i], l); j >= 0 {
			return nil, invalidParam(name, "%s lists layer %d twice (%s[%d] and %s); layers must be distinct", name, l, name, j, what)
		}
		out[i] = l
	}
	return out, nil
}

// indexValue reads an integer in [0, n).
func indexValue(raw json.RawMessage, name string, n int) (int, error) {
	v, ok := jsonInt(raw)
	switch {
	case !ok:
		return 0, invalidParam(name, "%s must be an integer in [0, %d]", name, n-1)
	case v < 0 || v >= int64(n):
		return 0, invalidParam(name, "%s must be in [0, %d]", name, n-1)
	}
	return int(v), nil
}

// parseAblate reads a list of distinct {"layer", "head"} objects, at most
// one per head of the model. Absent means none.
func parseAblate(raw json.RawMessage, name string, model gguf.ModelConfig, ignored *[]string) ([]engine.Head, error) {
	if raw == nil {
		return nil, nil
	}
	most := model.Layers * model.Heads
	items, ok := jsonList(raw, most)
	if !ok {
		if raw[0] == '[' { // a valid array that is too long
			return nil, invalidParam(name, "%s has more than %d entries (the model has %d layers × %d heads); entries must be distinct", name, most, model.Layers, model.Heads)
		}
		return nil, invalidParam(name, `%s must be a list of distinct {"layer": l, "head": h} objects`, name)
	}
	heads := make([]engine.Head, len(items))
	for i, item := range items {
		what := fmt.Sprintf("%s[%d]", name, i)
		fields, err := parseNested(item, what, headFields, ignored)
		if err != nil {
			return nil, withParam(what, err)
		}
		var head engine.Head
		for _, f := range []struct {
			key string
			n   int
			to  *int
		}{{"layer", model.Layers, &head.Layer}, {"head", model.Heads, &head.Head}} {
			v, present := fields[f.key]
			if !present {
				return nil, invalidParam(what+"."+f.key, "%s.%s is required", what, f.key)
			}
			if *f.to, err = indexValue(v, what+"."+f.key, f.n); err != nil {
				return nil, err
			}
		}
		if j := slices.Index(heads[:i], head); j >= 0 {
			return nil, invalidParam(name, "%s lists layer %d head %d twice (%s[%d] and %s); entries must be distinct", name, head.Layer, head.Head, name, j, what)
		}
		heads[i] = head
	}
	return heads, nil
}

// boolField reads an optional boolean (false when absent). name is how
// messages call the field.
func boolField(fields map[string]json.RawMessage, key, name string) (bool, error) {
	raw, present := fields[key]
	switch {
	case !present:
		return false, nil
	case string(raw) == "true":
		return true, nil
	case string(raw) == "false":
		return false, nil
	}
	return false, invalidParam(name, "%s must be a boolean (true or false)", name)
}

// parseAttentionRequest validates a POST /inspect/attention body: the
// tokens to generate first (default sampling with the request's seed, as on
// /inspect/full_attn), then every head of the requested layers over the
// window.
func parseAttentionRequest(body []byte, lim limits) (engine.FullAttnRequest, []string, error) {
	fields, ignored, err := parseBody(body, attentionFields)
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	messages, err := parseMessages(fields["messages"], &ignored)
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	layers, err := parseLayers(json.RawMessage(`"all"`), "layers", lim.model.Layers)
	if raw, ok := fields["layers"]; ok {
		layers, err = parseLayers(raw, "layers", lim.model.Layers)
	}
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	if len(layers) == 0 {
		return engine.FullAttnRequest{}, nil, invalidParam("layers", `layers must not be empty: list at least one layer, or "all"`)
	}
	seed, err := seedField(fields)
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	maxNew, err := rangeField(fields, "max_new_tokens", false, defaultInspectNewTokens, 0, int64(lim.maxNewTokens))
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	ablate, err := parseAblate(fields["ablate"], "ablate", lim.model, &ignored)
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	hop, err := windowHopField(fields, lim)
	if err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	// The window holds at most the prompt and the new tokens, and at most T:
	// the bound is known before any work for a byte-level model. A tokenizer
	// almost always makes fewer tokens than bytes; the handler checks the
	// window the engine really used again.
	prompt := engine.FormatTranscript(messages)
	window := min(len(prompt)+int(maxNew), lim.model.Context)
	if err := checkAttentionSize(len(layers), lim.model.Heads, window, lim.maxAttentionFloats); err != nil {
		return engine.FullAttnRequest{}, nil, err
	}
	return engine.FullAttnRequest{
		Messages:     messages,
		MaxNewTokens: int(maxNew),
		Sampling:     engine.Sampling{Temperature: defaultTemperature, TopK: min(defaultTopK, lim.model.Vocab), Seed: seed},
		Layers:       layers,
		Ablate:       ablate,
		WindowHop:    hop,
	}, ignored, nil
}

// parseScoreRequest validates a POST /inspect/score body: exactly one of
// text (scored as its UTF-8 bytes) and messages (the transcript without the
// generation prompt: the conversation as it stands, not an invitation to
// continue it).
func parseScoreRequest(body []byte, lim limits) (engine.ScoreRequest, []string, error) {
	fields, ignored, err := parseBody(body, scoreFields)
	if err != nil {
		return engine.ScoreRequest{}, nil, err
	}
	rawText, hasText := fields["text"]
	_, hasMessages := fields["messages"]
	var req engine.ScoreRequest
	switch {
	case hasText && hasMessages:
		return engine.ScoreRequest{}, nil, invalidf("give exactly one of text and messages, not both")
	case hasText:
		text, ok := stringField(rawText)
		switch {
		case !ok:
			return engine.ScoreRequest{}, nil, invalidParam("text", "text must be a string")
		case text == "":
			return engine.ScoreRequest{}, nil, invalidParam("text", "text must not be empty")
		}
		req.Text = []byte(text)
	case hasMessages:
		messages, err := parseMessages(fields["messages"], &ignored)
		if err != nil {
			return engine.ScoreRequest{}, nil, err
		}
		req.Messages = messages
	default:
		return engine.ScoreRequest{}, nil, invalidf("text or messages is required (exactly one of them)")
	}
	topK, err := rangeField(fields, "top_k", false, defaultScoreTopK, 0, engine.MaxTopLogprobs)
	if err != nil {
		return engine.ScoreRequest{}, nil, err
	}
	ablate, err := parseAblate(fields["ablate"], "ablate", lim.model, &ignored)
	if err != nil {
		return engine.ScoreRequest{}, nil, err
	}
	req.TopN, req.Ablate = int(topK), ablate
	return req, ignored, nil
}

// checkAttentionSize refuses an /inspect/attention answer of more than
// most probabilities (MAX_ATTENTION_FLOATS), naming what makes it that big.
func checkAttentionSize(layers, heads, window, most int) error {
	n := int64(layers) * int64(heads) * int64(window) * int64(window)
	if n <= int64(most) {
		return nil
	}
	return invalidParam("layers", "the answer would hold %d layers × %d heads × %d × %d tokens = %d attention probabilities, "+
		"more than this server's limit of %d (MAX_ATTENTION_FLOATS): ask for fewer layers, or a shorter transcript or fewer new tokens",
		layers, heads, window, window, n, most)
}
