/*
 * test_golden.c — the C library against PyTorch, with no Go in between.
 *
 *   test_golden FIXTURE.gguf GOLDEN.json [BACKEND_DIR [DEVICE]]
 *
 * The goldens are float64 PyTorch runs written by scripts/make_fixtures.py
 * (the same files engine/golden_test.go reads): the prefill window's logits
 * and every layer's and head's attention, and 80 greedy steps that slide the
 * window past T, computed the reference way (the whole window every step).
 * Here the cache does the work, as the engine drives it: one token at a time,
 * the window in one pass and in chunks, and greedy decoding that recomputes
 * the window from position 0 once it moves, in one cache for the whole run,
 * or in a new cache at each move that lands on other blocks of a KV pool
 * every block of which holds what earlier sequences left there. The deeper
 * goldens beside GOLDEN.json (NAME_deep.json) check every layer's attention
 * rows and the logit lens along a greedy run, a run with heads ablated, and
 * a window scored in one pass with every row's logits. With
 * BACKEND_DIR the backend is a module from there, as
 * `nielsgpt serve` runs it with BACKEND_DIR set: the best CPU variant for
 * this machine, or the DEVICE named (cuda).
 */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LOGIT_TOL 1e-4
#define ATTN_TOL  1e-5
#define LENS_TOL  1e-4

/* The KV pool of the model under test, in windows (plus a few blocks, so a
 * moving cache lands at every offset): small, so the moving greedy run goes
 * round it several times. */
#define POOL_WINDOWS 3
#define POOL_EXTRA   2

typedef struct golden {
    int      T, L, H, V, steps, trace_layer, n_prompt;
    double * prefill_tokens;   /* [T] */
    double * prefill_logits;   /* [T][V] */
    double * prefill_attn;     /* [L][H][T][T] */
    double * prompt;           /* [n_prompt] */
    double * greedy_tokens;    /* [steps] */
    double * greedy_logits;    /* [steps][V] */
    double * greedy_rows;      /* [steps][H][t], t = the window's length at that step */
    size_t   n_greedy_rows;
} golden;

static double * numbers(const char * text, const char * section, const char * key, size_t want) {
    size_t n;
    double * v = golden_numbers(text, section, key, &n);
    if (want != 0 && n != want) {
        die("golden %s.%s: %zu numbers, want %zu", section, key, n, want);
    }
    return v;
}

static golden read_goldens(const char * path) {
    char * text = read_golden(path);
    golden g;
    g.T = golden_int(text, "config", "T");
    g.L = golden_int(text, "config", "L");
    g.H = golden_int(text, "config", "H");
    g.V = golden_int(text, "config", "V");
    g.steps       = golden_int(text, "greedy", "steps");
    g.trace_layer = golden_int(text, "greedy", "trace_layer");
    const size_t T = (size_t) g.T, V = (size_t) g.V;
    g.prefill_tokens = numbers(text, "prefill", "tokens", T);
    g.prefill_logits = numbers(text, "prefill", "logits", T * V);
    g.prefill_attn   = numbers(text, "prefill", "attn", (size_t) g.L * (size_t) g.H * T * T);
    size_t n_prompt;
    g.prompt = golden_numbers(text, "greedy", "prompt", &n_prompt);
    g.n_prompt = (int) n_prompt;
    g.greedy_tokens = numbers(text, "greedy", "tokens", (size_t) g.steps);
    g.greedy_logits = numbers(text, "greedy", "logits", (size_t) g.steps * V);
    g.greedy_rows   = golden_numbers(text, "greedy", "attn_rows", &g.n_greedy_rows);
    free(text);
    return g;
}

static int argmax(const float * v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        best = v[i] > v[best] ? i : best;
    }
    return best;
}

/* One step of one item, or die: a failed step leaves nothing to compare. */
static void step(ngpt_model * m, const ngpt_item * it) {
    char err[256];
    if (ngpt_step(m, it, 1, err, sizeof(err)) != 0) {
        die("step at n_past %d: %s", it->n_past, err);
    }
}

/* The whole window in one pass, once per layer and head: the full
 * probabilities and the last logits; then in chunks of 7 tokens, each chunk
 * attending to the cache the ones before it wrote. */
static void test_prefill(ngpt_model * m, const golden * g) {
    const int T = g->T, V = g->V;
    ngpt_seq * s = new_seq(m, T);
    int32_t * tokens = malloc(sizeof(int32_t) * (size_t) T);
    for (int i = 0; i < T; i++) {
        tokens[i] = (int32_t) g->prefill_tokens[i];
    }
    float * logits = malloc(sizeof(float) * (size_t) V);
    const size_t matrix = (size_t) T * (size_t) T;
    float * full   = malloc(sizeof(float) * (size_t) g->L * (size_t) g->H * matrix);
    int32_t * layers = malloc(sizeof(int32_t) * (size_t) g->L);
    for (int k = 0; k < g->L; k++) {
        layers[k] = g->L - 1 - k;  /* last first: the output follows the list */
    }
    const double * last = g->prefill_logits + (size_t) (T - 1) * (size_t) V;
    ngpt_item it = { .seq = s, .tokens = tokens, .n_tokens = T, .n_past = 0, .logits = logits,
                     .n_full = g->L, .full_layers = layers, .full_attn = full };
    step(m, &it);
    double dl = max_abs_diff(logits, last, (size_t) V);
    CHECK(dl <= LOGIT_TOL, "prefill: last logits differ by %.2e", dl);
    for (int k = 0; k < g->L; k++) {
        for (int h = 0; h < g->H; h++) {
            const int l = layers[k];
            const double * want = g->prefill_attn + ((size_t) l * (size_t) g->H + (size_t) h) * matrix;
            double da = max_abs_diff(full + ((size_t) k * (size_t) g->H + (size_t) h) * matrix, want, matrix);
            CHECK(da <= ATTN_TOL, "prefill layer %d head %d: attention differs by %.2e", l, h, da);
        }
    }
    free(layers);
    for (int from = 0; from < T; from += 7) {
        const int to = from + 7 < T ? from + 7 : T;
        ngpt_item chunk = { .seq = s, .tokens = tokens + from, .n_tokens = to - from, .n_past = from,
                            .logits = to == T ? logits : NULL };
        step(m, &chunk);
    }
    dl = max_abs_diff(logits, last, (size_t) V);
    CHECK(dl <= LOGIT_TOL, "chunked prefill: last logits differ by %.2e", dl);
    free(full);
    free(logits);
    free(tokens);
    ngpt_seq_free(s);
}

/* One token at a time through the cache: every position's logits, and each
 * layer's newest attention row, against the prefill's. */
static void test_decode(ngpt_model * m, const golden * g) {
    const int T = g->T, V = g->V, H = g->H;
    ngpt_seq * s = new_seq(m, T);
    float * logits = malloc(sizeof(float) * (size_t) V);
    float * rows   = malloc(sizeof(float) * (size_t) H * (size_t) T);
    double worst_logit = 0, worst_attn = 0;
    for (int pos = 0; pos < T; pos++) {
        const int32_t token = (int32_t) g->prefill_tokens[pos];
        for (int l = 0; l < g->L; l++) {
            const int32_t layer = l;
            ngpt_item it = { .seq = s, .tokens = &token, .n_tokens = 1, .n_past = pos, .logits = logits,
                             .n_trace = 1, .trace_layers = &layer, .attn_rows = rows };
            step(m, &it);
            double dl = max_abs_diff(logits, g->prefill_logits + (size_t) pos * (size_t) V, (size_t) V);
            worst_logit = dl > worst_logit || dl != dl ? dl : worst_logit;
            for (int h = 0; h < H; h++) {
                /* row pos of layer l, head h, up to and including pos */
                const double * want = g->prefill_attn +
                    (((size_t) l * (size_t) H + (size_t) h) * (size_t) T + (size_t) pos) * (size_t) T;
                double da = max_abs_diff(rows + (size_t) h * (size_t) (pos + 1), want, (size_t) pos + 1);
                worst_attn = da > worst_attn || da != da ? da : worst_attn;
            }
        }
    }
    printf("decode: max |dlogit| %.2e, max |dattn| %.2e over %d positions\n", worst_logit, worst_attn, T);
    CHECK(worst_logit <= LOGIT_TOL, "decode: logits differ by %.2e", worst_logit);
    CHECK(worst_attn <= ATTN_TOL, "decode: attention differs by %.2e", worst_attn);
    free(rows);
    free(logits);
    ngpt_seq_free(s);
}

/* Fill every block of the pool with what a sequence leaves behind: one-block
 * sequences until the pool has no room (exactly its blocks, or the pool
 * hands out what it does not have), each fed a block of tokens; then give
 * them all back. A cache taken later starts on these stale keys and values,
 * which the padded attention reads and must mask. */
static void dirty_pool(ngpt_model * m, const golden * g) {
    ngpt_kv_stats st;
    ngpt_kv_stats_get(m, &st);
    const int n = g->T < NGPT_KV_BLOCK ? g->T : NGPT_KV_BLOCK;
    ngpt_seq ** seqs = calloc((size_t) st.blocks + 1, sizeof(*seqs));
    int32_t * tokens = malloc(sizeof(int32_t) * (size_t) n);
    char err[256];
    int64_t held = 0;
    int rc = NGPT_OK;
    while (held <= st.blocks && (rc = ngpt_seq_new(m, n, &seqs[held], err, sizeof(err))) == NGPT_OK) {
        for (int j = 0; j < n; j++) {
            tokens[j] = (int32_t) ((held * 31 + j * 7) % g->V);
        }
        ngpt_item it = { .seq = seqs[held], .tokens = tokens, .n_tokens = n, .n_past = 0 };
        step(m, &it);
        held++;
    }
    CHECK(rc == NGPT_KV_FULL && held == st.blocks, "a pool of %lld blocks held %lld one-block sequences (rc %d)",
          (long long) st.blocks, (long long) held, rc);
    for (int64_t i = 0; i < held; i++) {
        CHECK(ngpt_seq_free(seqs[i]) == 0, "free a one-block sequence");
    }
    ngpt_kv_stats_get(m, &st);
    CHECK(st.free_blocks == st.blocks, "%lld of %lld blocks free after every sequence ended",
          (long long) st.free_blocks, (long long) st.blocks);
    free(tokens);
    free(seqs);
}

/* A cache of T positions on other blocks than the last one's: a one-block
 * spacer is taken first, so the cache lands at least one block further on;
 * when the pool has no room left, the spacers go back and it starts again
 * from the lowest block. *wraps counts the times it went round. */
static ngpt_seq * moved_seq(ngpt_model * m, int T, ngpt_seq ** spacers, int * n_spacers, int * wraps) {
    char err[256];
    for (;;) {
        ngpt_seq * spacer = NULL, * s = NULL;
        int rc = ngpt_seq_new(m, 1, &spacer, err, sizeof(err));
        if (rc == NGPT_OK) {
            spacers[(*n_spacers)++] = spacer;
            rc = ngpt_seq_new(m, T, &s, err, sizeof(err));
        }
        if (rc == NGPT_OK) {
            return s;
        }
        if (rc != NGPT_KV_FULL || *n_spacers == 0) {
            die("a cache of %d positions (rc %d): %s", T, rc, err);
        }
        CHECK(s == NULL, "a refused sequence came back as a handle");
        for (int i = 0; i < *n_spacers; i++) {
            CHECK(ngpt_seq_free(spacers[i]) == 0, "free a spacer");
        }
        *n_spacers = 0;
        (*wraps)++;
    }
}

/* Greedy decoding as the engine's scheduler does it: the window is the last
 * T tokens; while it stays put each step feeds the new token, and once it
 * moves every position shifted, so the cache is recomputed from position 0.
 * moving false: one cache of T positions for the whole run; true: a new
 * cache at every move, somewhere else in the pool (see moved_seq). */
static void test_greedy(ngpt_model * m, const golden * g, bool moving) {
    const int T = g->T, V = g->V, H = g->H;
    ngpt_kv_stats st;
    ngpt_kv_stats_get(m, &st);
    ngpt_seq ** spacers = calloc((size_t) st.blocks, sizeof(*spacers));
    int n_spacers = 0, wraps = 0;
    ngpt_seq * s = moving ? moved_seq(m, T, spacers, &n_spacers, &wraps) : new_seq(m, T);
    int32_t * ids  = malloc(sizeof(int32_t) * (size_t) (g->n_prompt + g->steps));
    float * logits = malloc(sizeof(float) * (size_t) V);
    float * rows   = malloc(sizeof(float) * (size_t) H * (size_t) T);
    for (int i = 0; i < g->n_prompt; i++) {
        ids[i] = (int32_t) g->prompt[i];
    }
    int n = g->n_prompt, window = 0, cached = 0, slides = 0;
    size_t row_at = 0;
    double worst_logit = 0, worst_attn = 0;
    for (int i = 0; i < g->steps; i++) {
        const int start = n > T ? n - T : 0, t = n - start;
        if (row_at + (size_t) H * (size_t) t > g->n_greedy_rows) {
            die("golden: greedy.attn_rows ends at step %d", i);
        }
        if (start != window) {
            window = start;
            cached = 0;
            slides++;
            if (moving) {
                CHECK(ngpt_seq_free(s) == 0, "free the cache the window left");
                s = moved_seq(m, T, spacers, &n_spacers, &wraps);
            }
        }
        const int32_t layer = g->trace_layer;
        ngpt_item it = { .seq = s, .tokens = ids + start + cached, .n_tokens = t - cached, .n_past = cached,
                         .logits = logits, .n_trace = 1, .trace_layers = &layer, .attn_rows = rows };
        step(m, &it);
        double dl = max_abs_diff(logits, g->greedy_logits + (size_t) i * (size_t) V, (size_t) V);
        double da = max_abs_diff(rows, g->greedy_rows + row_at, (size_t) H * (size_t) t);
        worst_logit = dl > worst_logit || dl != dl ? dl : worst_logit;
        worst_attn  = da > worst_attn || da != da ? da : worst_attn;
        row_at += (size_t) H * (size_t) t;
        const int want = (int) g->greedy_tokens[i];
        CHECK(argmax(logits, V) == want, "greedy step %d: token %d, PyTorch chose %d", i, argmax(logits, V), want);
        ids[n++] = want;
        cached = t;
    }
    const char * how = moving ? "moving cache" : "one cache";
    printf("greedy (%s): %d steps, %d window slides, %d times round a pool of %lld blocks, "
           "max |dlogit| %.2e, max |dattn| %.2e\n", how, g->steps, slides, wraps, (long long) st.blocks,
           worst_logit, worst_attn);
    CHECK(slides > 0, "greedy: the window never moved; the golden must cross T");
    CHECK(!moving || wraps > 0, "greedy (%s): the cache never went round the pool", how);
    CHECK(worst_logit <= LOGIT_TOL, "greedy (%s): logits differ by %.2e", how, worst_logit);
    CHECK(worst_attn <= ATTN_TOL, "greedy (%s): attention differs by %.2e", how, worst_attn);
    for (int i = 0; i < n_spacers; i++) {
        CHECK(ngpt_seq_free(spacers[i]) == 0, "free a spacer");
    }
    CHECK(ngpt_seq_free(s) == 0, "free the greedy cache");
    ngpt_kv_stats_get(m, &st);
    CHECK(st.free_blocks == st.blocks, "greedy (%s): %lld of %lld blocks free at the end", how,
          (long long) st.free_blocks, (long long) st.blocks);
    free(spacers);
    free(rows);
    free(logits);
    free(ids);
}

/* ---------------------------------------------------------------- deeper traces */

/* softmax of n logits into p, in double */
static void softmax(const float * logits, int n, double * p) {
    double maxv = logits[0], sum = 0;
    for (int i = 1; i < n; i++) {
        maxv = logits[i] > maxv ? logits[i] : maxv;
    }
    for (int i = 0; i < n; i++) {
        p[i] = exp((double) logits[i] - maxv);
        sum += p[i];
    }
    for (int i = 0; i < n; i++) {
        p[i] /= sum;
    }
}

/* The head mask for pairs (layer, head) flattened in heads[0..2n): 1
 * everywhere else. */
static float * head_mask(const ngpt_hparams * hp, const double * heads, size_t n_numbers) {
    float * mask = malloc(sizeof(float) * (size_t) hp->n_layer * (size_t) hp->n_head);
    for (int i = 0; i < hp->n_layer * hp->n_head; i++) {
        mask[i] = 1.0f;
    }
    for (size_t i = 0; i + 1 < n_numbers; i += 2) {
        mask[(int) heads[i] * hp->n_head + (int) heads[i + 1]] = 0.0f;
    }
    return mask;
}

/* Greedy from the golden prompt, the window recomputed once it moves (as
 * test_greedy): returns how many steps chose the golden tokens before the
 * first that did not. With deep, every layer's newest rows (in reverse
 * order) and the lens are checked too. */
static int deep_greedy(ngpt_model * m, const ngpt_hparams * hp, const char * text, const float * mask, bool deep,
                       const double * want_tokens, int steps) {
    const int T = hp->n_ctx, V = hp->n_vocab, H = hp->n_head, L = hp->n_layer;
    size_t n_prompt, n_rows, n_lens;
    double * prompt = golden_numbers(text, "model", "prompt", &n_prompt);
    double * rows_want = deep ? golden_numbers(text, "model", "layer_rows", &n_rows) : NULL;
    double * lens_want = deep ? golden_numbers(text, "model", "lens", &n_lens) : NULL;
    const int lens_steps = deep ? golden_int(text, "model", "lens_steps") : 0;
    int32_t * ids = malloc(sizeof(int32_t) * (n_prompt + (size_t) steps));
    int32_t * layers = malloc(sizeof(int32_t) * (size_t) L);
    float * logits = malloc(sizeof(float) * (size_t) V);
    float * rows = malloc(sizeof(float) * (size_t) L * (size_t) H * (size_t) T);
    float * lens = malloc(sizeof(float) * (size_t) L * (size_t) V);
    double * p = malloc(sizeof(double) * (size_t) V);
    for (size_t i = 0; i < n_prompt; i++) {
        ids[i] = (int32_t) prompt[i];
    }
    for (int k = 0; k < L; k++) {
        layers[k] = L - 1 - k;
    }
    ngpt_seq * s = new_seq(m, T);
    int n = (int) n_prompt, window = 0, cached = 0, agreed = 0;
    size_t row_at = 0;
    double worst_attn = 0, worst_lens = 0;
    for (int i = 0; i < steps; i++) {
        const int start = n > T ? n - T : 0, t = n - start;
        if (start != window) {
            window = start;
            cached = 0;
        }
        ngpt_item it = { .seq = s, .tokens = ids + start + cached, .n_tokens = t - cached, .n_past = cached,
                         .logits = logits, .head_mask = mask };
        if (deep) {
            it.n_trace = L;
            it.trace_layers = layers;
            it.attn_rows = rows;
            it.lens = lens;
        }
        step(m, &it);
        for (int k = 0; deep && k < L; k++) {
            /* the golden holds [layer][head][t] per step, layers in order */
            const double * want = rows_want + row_at + (size_t) layers[k] * (size_t) H * (size_t) t;
            double d = max_abs_diff(rows + (size_t) k * (size_t) H * (size_t) t, want, (size_t) H * (size_t) t);
            worst_attn = d > worst_attn || d != d ? d : worst_attn;
        }
        row_at += (size_t) L * (size_t) H * (size_t) t;
        for (int l = 0; i < lens_steps && l < L; l++) {
            softmax(lens + (size_t) l * (size_t) V, V, p);
            const double * want = lens_want + ((size_t) i * (size_t) L + (size_t) l) * (size_t) V;
            for (int v = 0; v < V; v++) {
                double d = fabs(p[v] - want[v]);
                worst_lens = d > worst_lens || d != d ? d : worst_lens;
            }
        }
        if (deep) {
            CHECK(memcmp(lens + (size_t) (L - 1) * (size_t) V, logits, sizeof(float) * (size_t) V) == 0,
                  "step %d: the last layer's lens is not the logits", i);
        }
        const int got = argmax(logits, V);
        if (got != (int) want_tokens[i]) {
            break;
        }
        agreed++;
        ids[n++] = got;
        cached = t;
    }
    if (deep) {
        printf("deep greedy: %d steps, max |dattn| %.2e over %d layers, max |dlens| %.2e over %d steps\n", agreed,
               worst_attn, L, worst_lens, lens_steps);
        CHECK(row_at <= n_rows && (size_t) lens_steps * (size_t) L * (size_t) V == n_lens, "deep golden: wrong sizes");
        CHECK(worst_attn <= ATTN_TOL, "deep greedy: attention differs by %.2e", worst_attn);
        CHECK(worst_lens <= LENS_TOL, "deep greedy: lens differs by %.2e", worst_lens);
    }
    CHECK(ngpt_seq_free(s) == 0, "free the deep greedy cache");
    free(p);
    free(lens);
    free(rows);
    free(logits);
    free(layers);
    free(ids);
    free(lens_want);
    free(rows_want);
    free(prompt);
    return agreed;
}

/* The window of the golden text in one pass, heads ablated, every row's
 * logits: each position's log-probability and entropy. */
static void deep_score(ngpt_model * m, const ngpt_hparams * hp, const char * text) {
    const int V = hp->n_vocab;
    size_t n_text, n_ablate, n_logprobs, n_entropy;
    double * bytes = golden_numbers(text, "score", "text", &n_text);
    double * ablate = golden_numbers(text, "score", "ablate", &n_ablate);
    double * logprobs = golden_numbers(text, "score", "logprobs", &n_logprobs);
    double * entropy = golden_numbers(text, "score", "entropy", &n_entropy);
    const int offset = golden_int(text, "score", "offset");
    const int t = (int) n_text - offset;
    CHECK(t == hp->n_ctx && n_logprobs == (size_t) t - 1 && n_entropy == n_logprobs, "deep golden: score sizes");
    float * mask = head_mask(hp, ablate, n_ablate);
    int32_t * ids = malloc(sizeof(int32_t) * (size_t) t);
    float * all = malloc(sizeof(float) * (size_t) t * (size_t) V);
    float * last = malloc(sizeof(float) * (size_t) V);
    double * p = malloc(sizeof(double) * (size_t) V);
    for (int i = 0; i < t; i++) {
        ids[i] = (int32_t) bytes[offset + i];
    }
    ngpt_seq * s = new_seq(m, t);
    ngpt_item it = { .seq = s, .tokens = ids, .n_tokens = t, .logits = last, .all_logits = all, .head_mask = mask };
    step(m, &it);
    CHECK(memcmp(last, all + (size_t) (t - 1) * (size_t) V, sizeof(float) * (size_t) V) == 0,
          "score: the last logits are not the last of all rows");
    double worst = 0;
    for (int i = 1; i < t; i++) {
        softmax(all + (size_t) (i - 1) * (size_t) V, V, p);
        double h = 0;
        for (int v = 0; v < V; v++) {
            h -= p[v] * log(p[v] > 1e-12 ? p[v] : 1e-12);
        }
        double d = fabs(log(p[ids[i]]) - logprobs[i - 1]);
        d = fabs(h - entropy[i - 1]) > d ? fabs(h - entropy[i - 1]) : d;
        worst = d > worst || d != d ? d : worst;
    }
    printf("ablated one-pass score: max |d| %.2e over %d positions\n", worst, t - 1);
    CHECK(worst <= LOGIT_TOL, "ablated score differs by %.2e", worst);
    CHECK(ngpt_seq_free(s) == 0, "free the score cache");
    free(p);
    free(last);
    free(all);
    free(ids);
    free(mask);
    free(entropy);
    free(logprobs);
    free(ablate);
    free(bytes);
}

static void test_deep(ngpt_model * m, const ngpt_hparams * hp, const char * golden_path) {
    char path[4096];
    const size_t len = strlen(golden_path);
    if (len < 5 || len + 6 > sizeof(path) || strcmp(golden_path + len - 5, ".json") != 0) {
        die("golden path %s does not end in .json", golden_path);
    }
    snprintf(path, sizeof(path), "%.*s_deep.json", (int) (len - 5), golden_path);
    char * text = read_golden(path);
    const int steps = golden_int(text, "model", "steps");
    size_t n_tokens, n_ablated, n_heads;
    double * tokens = golden_numbers(text, "model", "tokens", &n_tokens);
    double * ablated = golden_numbers(text, "ablated", "tokens", &n_ablated);
    double * heads = golden_numbers(text, "ablated", "heads", &n_heads);
    CHECK(n_tokens == (size_t) steps && n_ablated == (size_t) steps, "deep golden: token counts");
    int agreed = deep_greedy(m, hp, text, NULL, true, tokens, steps);
    CHECK(agreed == steps, "deep greedy: token %d differs from PyTorch's", agreed);
    float * mask = head_mask(hp, heads, n_heads);
    agreed = deep_greedy(m, hp, text, mask, false, ablated, steps);
    printf("ablated greedy: %d of %d tokens as PyTorch\n", agreed, steps);
    CHECK(agreed == steps, "ablated greedy: token %d differs from PyTorch's", agreed);
    /* the ablated run must differ from the plain one, or this test could not fail */
    CHECK(memcmp(tokens, ablated, sizeof(double) * (size_t) steps) != 0, "deep golden: ablation changed nothing");
    deep_score(m, hp, text);
    free(mask);
    free(heads);
    free(ablated);
    free(tokens);
    free(text);
}

int main(int argc, char ** argv) {
    if (argc < 3 || argc > 5) {
        die("usage: test_golden FIXTURE.gguf GOLDEN.json [BACKEND_DIR [DEVICE]]");
    }
    const char * device = argc == 5 ? argv[4] : "cpu";
    char err[256];
    if (argc >= 4 && ngpt_backends_load(argv[3], err, sizeof(err)) != 0) {
        die("%s", err);
    }
    fixture f = load_fixture(argv[1]);
    golden g = read_goldens(argv[2]);
    CHECK(f.hp.n_ctx == g.T && f.hp.n_layer == g.L && f.hp.n_head == g.H && f.hp.n_vocab == g.V,
          "the fixture (T=%d L=%d H=%d V=%d) is not the golden's model", f.hp.n_ctx, f.hp.n_layer, f.hp.n_head,
          f.hp.n_vocab);
    if (test_failures > 0) {
        return 1;
    }
    ngpt_model * m = load_model(&f, device, POOL_WINDOWS * window_blocks(&f.hp) + POOL_EXTRA);
    printf("%s on %s\n", argv[1], ngpt_model_backend(m));
    if (argc >= 4) {
        CHECK(strstr(ngpt_model_backend(m), "(libggml-") != NULL,
              "backend %s: a module from %s should run, not a built-in backend", ngpt_model_backend(m), argv[3]);
    }
    dirty_pool(m, &g);
    test_prefill(m, &g);
    test_decode(m, &g);
    test_greedy(m, &g, false);
    test_greedy(m, &g, true);
    test_deep(m, &f.hp, argv[2]);
    CHECK(ngpt_model_free(m) == 0, "the model would not free: a sequence was left alive");
    free_fixture(&f);
    free(g.prefill_tokens);
    free(g.prefill_logits);
    free(g.prefill_attn);
    free(g.prompt);
    free(g.greedy_tokens);
    free(g.greedy_logits);
    free(g.greedy_rows);
    if (test_failures > 0) {
        fprintf(stderr, "%d checks failed\n", test_failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
