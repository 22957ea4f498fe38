package server

// The OpenAPI document is written by hand, so these tests are what keeps it a
// valid OpenAPI 3 document and faithful to docs/API.md; the HTTP tests check that
// /docs is usable with no network.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"
)

func loadOpenAPIDocument(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDocument)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	return doc
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc := loadOpenAPIDocument(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	// Examples are validated by default; defaults too, so a default that
	// breaks its own minimum is caught.
	err := doc.Validate(context.Background(), openapi3.EnableSchemaDefaultsValidation())
	if err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
}

func schemaNamed(t *testing.T, doc *openapi3.T, name string) *openapi3.Schema {
	t.Helper()
	ref, ok := doc.Components.Schemas[name]
	if !ok || ref.Value == nil {
		t.Fatalf("components.schemas.%s missing", name)
	}
	return ref.Value
}

func property(t *testing.T, doc *openapi3.T, schema, name string) *openapi3.Schema {
	t.Helper()
	ref, ok := schemaNamed(t, doc, schema).Properties[name]
	if !ok || ref.Value == nil {
		t.Fatalf("%s.%s missing", schema, name)
	}
	return ref.Value
}

func wantRequired(t *testing.T, doc *openapi3.T, schema string, fields ...string) {
	t.Helper()
	got := slices.Clone(schemaNamed(t, doc, schema).Required)
	slices.Sort(got)
	want := slices.Clone(fields)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s required = %v, want %v", schema, got, want)
	}
	for _, field := range fields {
		property(t, doc, schema, field)
	}
}

// wantInteger checks an integer field's default and bounds; nil means the
// field must not have one.
func wantInteger(t *testing.T, doc *openapi3.T, schema, name string, def, min, max *float64) {
	t.Helper()
	p := property(t, doc, schema, name)
	if !p.Type.Is("integer") {
		t.Errorf("%s.%s type %v, want integer", schema, name, p.Type)
	}
	wantNumberConstraints(t, schema+"."+name, p, def, min, max)
}

func wantNumberConstraints(t *testing.T, field string, p *openapi3.Schema, def, min, max *float64) {
	t.Helper()
	switch {
	case def == nil && p.Default != nil:
		t.Errorf("%s default %v, want none", field, p.Default)
	case def != nil && p.Default != *def:
		t.Errorf("%s default %v, want %v", field, p.Default, *def)
	}
	for _, bound := range []struct {
		what      string
		got, want *float64
	}{{"minimum", p.Min, min}, {"maximum", p.Max, max}} {
		switch {
		case bound.want == nil && bound.got != nil:
			t.Errorf("%s %s %v, want none", field, bound.what, *bound.got)
		case bound.want != nil && (bound.got == nil || *bound.got != *bound.want):
			t.Errorf("%s %s %v, want %v", field, bound.what, bound.got, *bound.want)
		}
	}
}

func num(v float64) *float64 { return &v }

// The OpenAPI document describes every route, error, request and response
// field of docs/API.md.
func TestOpenAPIDocumentDescribesTheAPI(t *testing.T) {
	doc := loadOpenAPIDocument(t)
	checkOpenAPIRoutes(t, doc)
	checkOpenAPIErrors(t, doc)
	checkOpenAPIRequests(t, doc)
	checkOpenAPIResponses(t, doc)
}

// Every route of docs/API.md and the documentation itself, with the media
// type of its success response.
func checkOpenAPIRoutes(t *testing.T, doc *openapi3.T) {
	routes := []struct{ method, path, mediaType string }{
		{http.MethodGet, "/", "text/html"},
		{http.MethodGet, "/ui/model", "application/json"},
		{http.MethodGet, "/health", "application/json"},
		{http.MethodGet, "/livez", "application/json"},
		{http.MethodGet, "/readyz", "application/json"},
		{http.MethodPost, "/chat/stream", "text/event-stream"},
		{http.MethodPost, "/inspect/full_attn", "application/json"},
		{http.MethodPost, "/inspect/attention", "application/json"},
		{http.MethodPost, "/inspect/attention", "application/zip"},
		{http.MethodPost, "/inspect/score", "application/json"},
		{http.MethodGet, "/metrics", "text/plain"},
		{http.MethodGet, "/openapi.json", "application/json"},
		{http.MethodGet, "/docs", "text/html"},
		{http.MethodGet, "/v1/models", "application/json"},
		{http.MethodPost, "/v1/chat/completions", "text/event-stream"},
		{http.MethodPost, "/v1/completions", "application/json"},
	}
	if got := len(doc.Paths.Map()); got != 15 {
		t.Errorf("document has %d paths, want 15", got)
	}
	for _, route := range routes {
		item := doc.Paths.Value(route.path)
		if item == nil {
			t.Errorf("path %s missing", route.path)
			continue
		}
		op := item.GetOperation(route.method)
		if op == nil {
			t.Errorf("%s %s missing", route.method, route.path)
			continue
		}
		ok := op.Responses.Value("200")
		if ok == nil || ok.Value.Content.Get(route.mediaType) == nil {
			t.Errorf("%s %s: no 200 %s response", route.method, route.path, route.mediaType)
		}
	}
}

// The POST endpoints of the original's dialect answer the same errors, with
// Retry-After where a retry helps.
func checkOpenAPIErrors(t *testing.T, doc *openapi3.T) {
	for _, path := range []string{"/chat/stream", "/inspect/full_attn", "/inspect/attention", "/inspect/score"} {
		op := doc.Paths.Value(path).Post
		if op.RequestBody == nil || !op.RequestBody.Value.Required {
			t.Errorf("POST %s: request body not required", path)
		}
		for status, codes := range map[string][]string{
			"413": {"prompt_too_large", "body_too_large"},
			"429": {"rate_limited"},
			"500": {"engine_error", "internal_error"},
			"503": {"model_loading", "busy", "shutting_down"},
		} {
			response := op.Responses.Value(status)
			if response == nil {
				t.Errorf("POST %s: %s missing", path, status)
				continue
			}
			schema := response.Value.Content.Get("application/json").Schema.Value
			// The code must be one of these, and the body an ErrorBody.
			for _, code := range codes {
				if err := schema.VisitJSON(map[string]any{"error": "x", "code": code}); err != nil {
					t.Errorf("POST %s %s refuses code %s: %v", path, status, code, err)
				}
			}
			if err := schema.VisitJSON(map[string]any{"error": "x", "code": "nonsense"}); err == nil {
				t.Errorf("POST %s %s accepts an unknown code", path, status)
			}
			_, hasRetryAfter := response.Value.Headers["Retry-After"]
			if wantRetryAfter := status == "429" || status == "503"; hasRetryAfter != wantRetryAfter {
				t.Errorf("POST %s %s: Retry-After header documented = %v, want %v", path, status, hasRetryAfter, wantRetryAfter)
			}
		}
		invalid := op.Responses.Value("422")
		if invalid == nil || invalid.Value.Content.Get("application/json").Schema.Value != schemaNamed(t, doc, "ValidationError") {
			t.Errorf("POST %s: 422 is not a ValidationError", path)
		}
	}
}

// Request bodies: every field, required ones and defaults.
func checkOpenAPIRequests(t *testing.T, doc *openapi3.T) {
	chat := doc.Paths.Value("/chat/stream").Post.RequestBody.Value.Content.Get("application/json").Schema.Value
	if chat != schemaNamed(t, doc, "ChatRequest") {
		t.Errorf("POST /chat/stream body is not ChatRequest")
	}
	wantRequired(t, doc, "ChatRequest", "messages", "trace_layer")
	wantInteger(t, doc, "ChatRequest", "max_new_tokens", num(256), num(0), num(1024))
	wantInteger(t, doc, "ChatRequest", "seed", num(42), nil, nil)
	wantInteger(t, doc, "ChatRequest", "trace_layer", nil, num(0), nil)
	wantInteger(t, doc, "ChatRequest", "top_k", num(50), num(1), nil)
	wantInteger(t, doc, "ChatRequest", "window_hop", nil, num(1), nil)
	if !property(t, doc, "ChatRequest", "top_k").Nullable {
		t.Errorf("ChatRequest.top_k is not nullable")
	}
	temperature := property(t, doc, "ChatRequest", "temperature")
	if !temperature.Type.Is("number") {
		t.Errorf("ChatRequest.temperature type %v, want number", temperature.Type)
	}
	wantNumberConstraints(t, "ChatRequest.temperature", temperature, num(0.9), num(0), nil)

	inspect := doc.Paths.Value("/inspect/full_attn").Post.RequestBody.Value.Content.Get("application/json").Schema.Value
	if inspect != schemaNamed(t, doc, "InspectRequest") {
		t.Errorf("POST /inspect/full_attn body is not InspectRequest")
	}
	wantRequired(t, doc, "InspectRequest", "messages", "trace_layer", "head")
	wantInteger(t, doc, "InspectRequest", "trace_layer", nil, num(0), nil)
	wantInteger(t, doc, "InspectRequest", "head", nil, num(0), nil)
	wantInteger(t, doc, "InspectRequest", "seed", num(42), nil, nil)
	wantInteger(t, doc, "InspectRequest", "max_new_tokens", num(0), num(0), num(1024))
	wantInteger(t, doc, "InspectRequest", "window_hop", nil, num(1), nil)
	for _, request := range []string{"ChatRequest", "InspectRequest"} {
		for _, field := range []string{"top_p", "repetition_penalty"} {
			if p := property(t, doc, request, field); !p.Type.Is("number") || !p.Nullable || !p.ExclusiveMin.IsTrue() {
				t.Errorf("%s.%s: want a nullable number > 0", request, field)
			}
		}
	}

	// The extensions.
	for _, f := range []struct{ request, field, schema string }{
		{"ChatRequest", "trace_layers", "LayerList"}, {"ChatRequest", "ablate", "Ablate"},
		{"InspectRequest", "ablate", "Ablate"}, {"AttentionRequest", "ablate", "Ablate"}, {"ScoreRequest", "ablate", "Ablate"},
	} {
		if p := schemaNamed(t, doc, f.request).Properties[f.field]; p == nil || !strings.HasSuffix(p.Ref+refOfAllOf(p.Value), "/"+f.schema) {
			t.Errorf("%s.%s is not a %s", f.request, f.field, f.schema)
		}
	}
	if lens := property(t, doc, "ChatRequest", "logit_lens"); !lens.Type.Is("boolean") || lens.Default != false {
		t.Errorf("ChatRequest.logit_lens: want a boolean, default false")
	}
	layerList := schemaNamed(t, doc, "LayerList")
	for value, ok := range map[string]bool{`"all"`: true, `[0, 3]`: true, `"some"`: false, `[-1]`: false, `3`: false} {
		var v any
		_ = json.Unmarshal([]byte(value), &v)
		if err := layerList.VisitJSON(v); (err == nil) != ok {
			t.Errorf("LayerList accepts %s: %v, want %v", value, err == nil, ok)
		}
	}
	wantRequired(t, doc, "HeadRef", "layer", "head")
	wantRequired(t, doc, "AttentionRequest", "messages")
	wantInteger(t, doc, "AttentionRequest", "max_new_tokens", num(0), num(0), num(1024))
	wantInteger(t, doc, "AttentionRequest", "seed", num(42), nil, nil)
	if d := property(t, doc, "AttentionRequest", "layers").Default; d != "all" {
		t.Errorf("AttentionRequest.layers default %v, want \"all\"", d)
	}
	wantRequired(t, doc, "ScoreRequest")
	wantInteger(t, doc, "ScoreRequest", "top_k", num(5), num(0), num(20))
	for _, field := range []string{"text", "messages", "ablate"} {
		property(t, doc, "ScoreRequest", field)
	}
	format := doc.Paths.Value("/inspect/attention").Post.Parameters.GetByInAndName("query", "format")
	if format == nil || !reflect.DeepEqual(format.Schema.Value.Enum, []any{"json", "npz"}) {
		t.Errorf("/inspect/attention: the format query parameter is not documented as json or npz")
	}

	for _, request := range []string{"ChatRequest", "InspectRequest", "AttentionRequest"} {
		messages := property(t, doc, request, "messages")
		if !messages.Type.Is("array") || messages.MinItems != 1 {
			t.Errorf("%s.messages: want an array of at least 1", request)
		}
	}
	wantRequired(t, doc, "Message", "role", "content")
	roles := property(t, doc, "Message", "role").Enum
	if !reflect.DeepEqual(roles, []any{"system", "user", "assistant"}) {
		t.Errorf("Message.role enum %v", roles)
	}
}

// refOfAllOf is the $ref a property wraps in allOf (to carry its own
// description beside the reference), or "".
func refOfAllOf(s *openapi3.Schema) string {
	if s == nil || len(s.AllOf) != 1 {
		return ""
	}
	return s.AllOf[0].Ref
}

// Response bodies and event payloads.
func checkOpenAPIResponses(t *testing.T, doc *openapi3.T) {
	wantRequired(t, doc, "Health", "ok", "model_ready")
	wantRequired(t, doc, "Liveness", "ok")
	wantRequired(t, doc, "Readiness", "ready", "model_ready", "draining")
	if r := doc.Paths.Value("/readyz").Get.Responses.Value("503"); r == nil || r.Value.Content.Get("application/json").Schema.Value != schemaNamed(t, doc, "Readiness") {
		t.Errorf("GET /readyz: 503 is not a Readiness body")
	}
	wantRequired(t, doc, "TokenEvent", "step", "token_id", "token_text", "token_display")
	wantRequired(t, doc, "TraceEvent", "step", "entropy", "topk", "attn")
	wantRequired(t, doc, "TopKEntry", "token_id", "token_text", "token_display", "prob")
	wantRequired(t, doc, "DoneEvent", "reply")
	wantRequired(t, doc, "FullAttention", "layer", "head", "token_ids", "tokens", "tokens_display", "attn")
	wantRequired(t, doc, "Attention", "layers", "token_ids", "tokens", "tokens_display", "attn")
	wantRequired(t, doc, "Scores", "offset", "token_ids", "tokens", "tokens_display", "scores", "mean_logprob", "bits_per_byte")
	wantRequired(t, doc, "PositionScore", "logprob", "entropy", "rank", "topk")
	wantRequired(t, doc, "LayerAttention", "layer", "attn")
	wantRequired(t, doc, "LensLayer", "layer", "entropy", "topk")
	if topk := property(t, doc, "LensLayer", "topk"); topk.MaxItems == nil || *topk.MaxItems != 5 {
		t.Errorf("LensLayer.topk maxItems %v, want 5", topk.MaxItems)
	}
	for _, optional := range []string{"layers", "lens"} {
		property(t, doc, "TraceEvent", optional)
	}
	wantRequired(t, doc, "ErrorBody", "error", "code")
	wantRequired(t, doc, "ValidationError", "detail")
	if topk := property(t, doc, "TraceEvent", "topk"); topk.MaxItems == nil || *topk.MaxItems != 10 {
		t.Errorf("TraceEvent.topk maxItems %v, want 10", topk.MaxItems)
	}
	for _, matrix := range []string{"TraceEvent", "FullAttention"} {
		attn := property(t, doc, matrix, "attn")
		if !attn.Type.Is("array") || !attn.Items.Value.Type.Is("array") || !attn.Items.Value.Items.Value.Type.Is("number") {
			t.Errorf("%s.attn is not an array of arrays of numbers", matrix)
		}
	}
	codes := property(t, doc, "ErrorBody", "code").Enum
	wantCodes := []any{"model_loading", "rate_limited", "prompt_too_large", "body_too_large", "busy",
		"shutting_down", "engine_error", "internal_error", "bad_request", "not_found", "method_not_allowed", "unauthorized"}
	if !reflect.DeepEqual(codes, wantCodes) {
		t.Errorf("ErrorBody.code enum %v, want %v", codes, wantCodes)
	}
}

// The SSE response cannot be described by a schema, so its description
// names the event payload schemas in x-sse-events; check the mapping and the
// example stream against it.
func TestOpenAPIDocumentDescribesEventStream(t *testing.T) {
	doc := loadOpenAPIDocument(t)
	ok := doc.Paths.Value("/chat/stream").Post.Responses.Value("200").Value
	for header, value := range map[string]string{"Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		ref, found := ok.Headers[header]
		if !found || !reflect.DeepEqual(ref.Value.Schema.Value.Enum, []any{value}) {
			t.Errorf("200 header %s: want documented as %q", header, value)
		}
	}
	stream := ok.Content.Get("text/event-stream")

	mapping, _ := stream.Extensions["x-sse-events"].(map[string]any)
	events := map[string]*openapi3.Schema{}
	for event, want := range map[string]string{"token": "TokenEvent", "trace": "TraceEvent", "done": "DoneEvent", "error": "ErrorBody"} {
		entry, _ := mapping[event].(map[string]any)
		if ref := entry["$ref"]; ref != "#/components/schemas/"+want {
			t.Errorf("x-sse-events.%s = %v, want a $ref to %s", event, ref, want)
		}
		events[event] = schemaNamed(t, doc, want)
	}

	example, _ := stream.Example.(string)
	if example == "" {
		t.Fatal("text/event-stream has no example")
	}
	if !strings.HasSuffix(example, "\n\n") {
		t.Errorf("example stream does not end with a blank line")
	}
	var names []string
	for _, frame := range strings.Split(strings.TrimSuffix(example, "\n\n"), "\n\n") {
		name, data, found := strings.Cut(frame, "\n")
		if !found || !strings.HasPrefix(name, "event: ") || !strings.HasPrefix(data, "data: ") {
			t.Fatalf("example frame %q is not `event: <name>\\ndata: <json>`", frame)
		}
		name = strings.TrimPrefix(name, "event: ")
		names = append(names, name)
		var payload any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &payload); err != nil {
			t.Fatalf("example %s data is not JSON: %v", name, err)
		}
		schema, known := events[name]
		if !known {
			t.Fatalf("example has an undocumented event %q", name)
		}
		if err := schema.VisitJSON(payload); err != nil {
			t.Errorf("example %s data does not match its schema: %v", name, err)
		}
	}
	// token then trace per step, done once, last.
	if len(names) < 3 || len(names)%2 != 1 || names[len(names)-1] != "done" {
		t.Fatalf("example event order %v", names)
	}
	for i, name := range names[:len(names)-1] {
		if want := []string{"token", "trace"}[i%2]; name != want {
			t.Errorf("example event %d is %s, want %s", i, name, want)
		}
	}
}

func startDocsServer(t *testing.T) *httptest.Server {
	t.Helper()
	gin.SetMode(gin.TestMode)
	engine := gin.New()
	RegisterDocs(engine)
	server := httptest.NewServer(engine)
	t.Cleanup(server.Close)
	return server
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	response, err := http.Get(url) // follows redirects, like curl -L
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return response, body
}

func TestServeOpenAPIDocument(t *testing.T) {
	server := startDocsServer(t)
	response, body := get(t, server.URL+"/openapi.json")
	if response.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json: %d", response.StatusCode)
	}
	if ct := response.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET /openapi.json Content-Type %q", ct)
	}
	if !json.Valid(body) || string(body) != string(openAPIDocument) {
		t.Errorf("GET /openapi.json did not return the embedded document")
	}
}

var pageURLs = regexp.MustCompile(`(?:src|href)="([^"]+)"`)

func TestServeSwaggerUI(t *testing.T) {
	server := startDocsServer(t)

	var page string
	for _, path := range []string{"/docs", "/docs/", "/docs/index.html"} {
		response, body := get(t, server.URL+path)
		if response.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, response.StatusCode)
		}
		if ct := response.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s Content-Type %q", path, ct)
		}
		page = string(body)
		for _, want := range []string{`id="swagger-ui"`, "SwaggerUIBundle(", `url: "/openapi.json"`, "validatorUrl: null"} {
			if !strings.Contains(page, want) {
				t.Errorf("GET %s: page lacks %s", path, want)
			}
		}
	}

	// Offline: every asset the page loads comes from this server and is there.
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the docs page refers to another host:\n%s", page)
	}
	assets := pageURLs.FindAllStringSubmatch(page, -1)
	if len(assets) < 3 {
		t.Fatalf("docs page loads %d assets, want the bundle, its CSS and icons", len(assets))
	}
	for _, asset := range assets {
		response, body := get(t, server.URL+asset[1])
		if response.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", asset[1], response.StatusCode, len(body))
		}
	}

	response, body := get(t, server.URL+"/docs/swagger-ui-bundle.js")
	if response.StatusCode != http.StatusOK || !strings.Contains(string(body), "SwaggerUIBundle") {
		t.Fatalf("GET /docs/swagger-ui-bundle.js: %d, %d bytes", response.StatusCode, len(body))
	}
	if ct := response.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("GET /docs/swagger-ui-bundle.js Content-Type %q", ct)
	}

	for _, path := range []string{"/docs/swagger-initializer.js", "/docs/missing.js"} {
		if response, _ := get(t, server.URL+path); response.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, response.StatusCode)
		}
	}

	head, err := http.Head(server.URL + "/docs")
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK {
		t.Errorf("HEAD /docs: %d", head.StatusCode)
	}
}
