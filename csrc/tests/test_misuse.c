/*
 * test_misuse.c — every misuse of the C API returns an error, never a crash.
 *
 *   test_misuse FIXTURE.gguf [BACKEND_DIR]
 *
 * What nielsgpt.h promises, call by call: NULL, foreign and freed handles
 * are refused; sizes, ids, positions, layers and heads out of range are
 * refused with a message; a KV pool with no room says NGPT_KV_FULL, hands
 * out nothing and has room again once sequences go; a failed step writes no
 * output; a second free is reported, not done; and after all of it the
 * model still computes exactly what it did before. Run under the asan preset, a crash or a read of freed
 * memory anywhere in this file fails the test.
 */
#define _XOPEN_SOURCE 700  /* mkdtemp */
#include "testutil.h"

#include "ggml-backend.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[256];

/* The KV pool the tests below load: one window and two blocks more. */
static int64_t pool_blocks;

/* A call that must fail: it returned failed, and left a message. */
static void expect_error(bool failed, const char * what, const char * want) {
    CHECK(failed, "%s: accepted", what);
    CHECK(failed && err[0] != '\0', "%s: no message", what);
    CHECK(!failed || want == NULL || strstr(err, want) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err, want);
}

/* ---------------------------------------------------------------- loading */

static void expect_load_fails_pool(const char * what, const char * want, const fixture * f, const ngpt_hparams * hp,
                                   size_t blob_len, const ngpt_tensor_ref * refs, int n_refs, const char * device,
                                   int n_threads, int64_t kv_blocks) {
    err[0] = '\0';
    ngpt_model * m = ngpt_model_load(hp, f->blob, blob_len, refs, n_refs, device, n_threads, kv_blocks, err,
                                     sizeof(err));
    expect_error(m == NULL, what, want);
    ngpt_model_free(m);
}

static void expect_load_fails(const char * what, const char * want, const fixture * f, const ngpt_hparams * hp,
                              size_t blob_len, const ngpt_tensor_ref * refs, int n_refs, const char * device,
                              int n_threads) {
    expect_load_fails_pool(what, want, f, hp, blob_len, refs, n_refs, device, n_threads, pool_blocks);
}

static int ref_index(const fixture * f, const char * name) {
    for (int i = 0; i < f->n_refs; i++) {
        if (strcmp(f->refs[i].name, name) == 0) {
            return i;
        }
    }
    die("fixture has no %s", name);
    return -1;
}

/* Hyper-parameters the library must refuse before building anything. */
static void misuse_hparams(const fixture * f) {
    const struct { const char * what; int field; int32_t value; } ints[] = {
        { "n_vocab 0", 0, 0 }, { "n_ctx -1", 1, -1 }, { "n_ctx 2^17", 1, 1 << 17 }, { "n_embd 0", 2, 0 },
        { "n_layer -1", 3, -1 }, { "n_head 3 (C not divisible)", 4, 3 },
        { "n_head = C (odd head size 1)", 4, f->hp.n_embd }, { "n_ff 0", 5, 0 },
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        ngpt_hparams hp = f->hp;
        int32_t * fields[] = { &hp.n_vocab, &hp.n_ctx, &hp.n_embd, &hp.n_layer, &hp.n_head, &hp.n_ff };
        *fields[ints[i].field] = ints[i].value;
        expect_load_fails(ints[i].what, NULL, f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    }
    ngpt_hparams hp = f->hp;
    hp.rope_theta = NAN;
    expect_load_fails("rope_theta NaN", "rope_theta", f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    hp = f->hp;
    hp.norm_eps = 0;
    expect_load_fails("norm_eps 0", "norm_eps", f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
}

/* Norm and MLP kinds: values that are no kind, and the other generation's
 * kind, whose tensor list the fixture's references do not match (LayerNorm
 * has biases RMSNorm lacks; SwiGLU has a gate GELU lacks). */
static void misuse_kinds(const fixture * f) {
    ngpt_hparams hp = f->hp;
    hp.norm_type = 2;
    expect_load_fails("norm_type 2", "norm_type", f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    CHECK(ngpt_kv_block_bytes(&hp) == 0, "ngpt_kv_block_bytes sized a model with norm_type 2");
    hp = f->hp;
    hp.mlp_type = -1;
    expect_load_fails("mlp_type -1", "mlp_type", f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    CHECK(ngpt_kv_block_bytes(&hp) == 0, "ngpt_kv_block_bytes sized a model with mlp_type -1");
    hp = f->hp;
    hp.kv_type = 2;
    expect_load_fails("kv_type 2", "kv_type", f, &hp, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    CHECK(ngpt_kv_block_bytes(&hp) == 0, "ngpt_kv_block_bytes sized a cache of kv_type 2");
    hp = f->hp;
    hp.kv_type = NGPT_KV_F16;
    CHECK(ngpt_kv_block_bytes(&hp) * 2 == ngpt_kv_block_bytes(&f->hp), "an F16 block is not half an F32 one");

    const bool rms = f->hp.norm_type == NGPT_NORM_RMS, swiglu = f->hp.mlp_type == NGPT_MLP_SWIGLU;
    hp = f->hp;
    hp.norm_type = rms ? NGPT_NORM_LAYER : NGPT_NORM_RMS;
    /* LayerNorm wants biases an RMSNorm model has not; RMSNorm finds the
     * LayerNorm model's biases left over */
    expect_load_fails("the other norm kind", rms ? "missing tensor output_norm.bias" : "tensors given", f, &hp,
                      f->blob_len, f->refs, f->n_refs, "cpu", 1);
    hp = f->hp;
    hp.mlp_type = swiglu ? NGPT_MLP_GELU : NGPT_MLP_SWIGLU;
    expect_load_fails("the other MLP kind", swiglu ? "tensors given" : "missing tensor blk.0.ffn_gate.weight", f, &hp,
                      f->blob_len, f->refs, f->n_refs, "cpu", 1);

    /* a gate of the wrong shape in a SwiGLU model */
    if (swiglu) {
        ngpt_tensor_ref * bad = malloc(sizeof(*bad) * (size_t) f->n_refs);
        memcpy(bad, f->refs, sizeof(*bad) * (size_t) f->n_refs);
        const int gate = ref_index(f, "blk.0.ffn_gate.weight");
        bad[gate].ne[1]--;
        expect_load_fails("a gate of the wrong shape", "blk.0.ffn_gate.weight has the wrong shape", f, &f->hp,
                          f->blob_len, bad, f->n_refs, "cpu", 1);
        free(bad);
    }
}

/* Tensor references that do not describe the architecture, or point
 * outside the blob. */
static void misuse_refs(const fixture * f) {
    const size_t n = (size_t) f->n_refs + 1;
    ngpt_tensor_ref * bad = malloc(sizeof(*bad) * n);
    const int mat = ref_index(f, "token_embd.weight"), vec = ref_index(f, "output_norm.weight");
    const uint64_t offsets[] = { f->blob_len, f->blob_len - 4, UINT64_MAX - 8 };
    for (int c = 0; c < 12; c++) {
        memcpy(bad, f->refs, sizeof(*bad) * (size_t) f->n_refs);
        int n_refs = f->n_refs;
        const char * what = "", * want = NULL;
        switch (c) {
        case 0: bad[mat].ne[0]++; what = "a matrix of the wrong shape"; want = "wrong shape"; break;
        case 1: bad[mat].n_dims = 3; what = "three dims"; want = "wrong shape"; break;
        case 2: bad[vec].n_dims = 0; what = "no dims"; want = "wrong shape"; break;
        case 3: bad[mat].type = 7; what = "a type that is not F32 or F16"; want = "type 7"; break;
        case 4: bad[vec].type = 1; bad[vec].nbytes /= 2; what = "an F16 vector"; want = "vectors must be F32"; break;
        case 5: bad[mat].nbytes++; what = "a wrong byte count"; want = "out of range"; break;
        case 6: case 7: case 8:
            bad[mat].offset = offsets[c - 6]; what = "data past the blob"; want = "out of range"; break;
        case 9: memset(bad[vec].name, 'x', sizeof(bad[vec].name)); what = "a name without its NUL"; want = "missing"; break;
        case 10: bad[mat] = bad[--n_refs]; what = "a tensor missing"; want = "missing tensor"; break;
        case 11: bad[n_refs++] = f->refs[vec]; what = "a tensor too many"; want = "tensors given"; break;
        }
        expect_load_fails(what, want, f, &f->hp, f->blob_len, bad, n_refs, "cpu", 1);
    }
    free(bad);
}

static void misuse_load(const fixture * f) {
    expect_load_fails("no hparams", NULL, f, NULL, f->blob_len, f->refs, f->n_refs, "cpu", 1);
    err[0] = '\0';
    expect_error(ngpt_model_load(&f->hp, NULL, f->blob_len, f->refs, f->n_refs, "cpu", 1, pool_blocks, err,
                                 sizeof(err)) == NULL, "no blob", NULL);
    expect_load_fails("no refs", NULL, f, &f->hp, f->blob_len, NULL, f->n_refs, "cpu", 1);
    expect_load_fails("0 refs", NULL, f, &f->hp, f->blob_len, f->refs, 0, "cpu", 1);
    expect_load_fails("-1 refs", NULL, f, &f->hp, f->blob_len, f->refs, -1, "cpu", 1);
    expect_load_fails("a blob cut in half", "out of range", f, &f->hp, f->blob_len / 2, f->refs, f->n_refs, "cpu", 1);
    expect_load_fails("0 threads", "thread", f, &f->hp, f->blob_len, f->refs, f->n_refs, "cpu", 0);
    expect_load_fails("513 threads", "thread", f, &f->hp, f->blob_len, f->refs, f->n_refs, "cpu", 513);
    expect_load_fails("device tpu", "unknown device", f, &f->hp, f->blob_len, f->refs, f->n_refs, "tpu", 1);
    if (ggml_backend_reg_by_name("CUDA") == NULL) {
        expect_load_fails("device cuda without CUDA", "cuda", f, &f->hp, f->blob_len, f->refs, f->n_refs, "cuda", 1);
    }
    /* the pool holds at least one window, and no more blocks than int32
     * indices reach (the cache writes' row indices) */
    const int64_t too_many = INT32_MAX / ((int64_t) NGPT_KV_BLOCK * f->hp.n_embd) + 1;
    const int64_t bad_blocks[] = { 0, -1, window_blocks(&f->hp) - 1, too_many, INT64_MAX, INT64_MIN };
    for (size_t i = 0; i < sizeof(bad_blocks) / sizeof(bad_blocks[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "a KV pool of %lld blocks", (long long) bad_blocks[i]);
        expect_load_fails_pool(what, "KV pool", f, &f->hp, f->blob_len, f->refs, f->n_refs, "cpu", 1, bad_blocks[i]);
    }
    misuse_hparams(f);
    misuse_kinds(f);
    misuse_refs(f);

    /* err may be NULL or short: the call still fails cleanly, and a short
     * message is cut and NUL-terminated */
    CHECK(ngpt_model_load(&f->hp, f->blob, f->blob_len, f->refs, f->n_refs, "tpu", 1, pool_blocks, NULL, 0) == NULL,
          "err NULL");
    char tiny[8] = "xxxxxxx";
    CHECK(ngpt_model_load(&f->hp, f->blob, f->blob_len, f->refs, f->n_refs, "tpu", 1, pool_blocks, tiny, 1) == NULL &&
          tiny[0] == '\0', "err_len 1: \"%s\"", tiny);
    memset(tiny, 'x', sizeof(tiny));
    CHECK(ngpt_model_load(&f->hp, f->blob, f->blob_len, f->refs, f->n_refs, "tpu", 1, pool_blocks, tiny,
                          sizeof(tiny)) == NULL && strlen(tiny) == sizeof(tiny) - 1,
          "err_len 8: not cut to 7 characters");
}

/* ---------------------------------------------------------------- sequences */

/* A call to ngpt_seq_new that must fail with status want, hand out no
 * sequence and leave a message. */
static void expect_seq_fails(ngpt_model * m, int capacity, int want_rc, const char * what, const char * want) {
    ngpt_seq * s = (ngpt_seq *) &err;  /* not NULL, so the call must clear it */
    err[0] = '\0';
    const int rc = ngpt_seq_new(m, capacity, &s, err, sizeof(err));
    expect_error(rc != NGPT_OK, what, want);
    CHECK(rc == want_rc, "%s: status %d, want %d", what, rc, want_rc);
    CHECK(s == NULL, "%s: a sequence was handed out", what);
    if (rc == NGPT_OK) {
        ngpt_seq_free(s);
    }
}

static void free_blocks_are(const ngpt_model * m, int64_t want, const char * when) {
    ngpt_kv_stats st = { -1, -1 };
    ngpt_kv_stats_get(m, &st);
    CHECK(st.blocks == pool_blocks && st.free_blocks == want, "%s: %lld of %lld blocks free, want %lld of %lld",
          when, (long long) st.free_blocks, (long long) st.blocks, (long long) want, (long long) pool_blocks);
}

static void misuse_seqs(ngpt_model * m, const fixture * f) {
    const int T = f->hp.n_ctx;
    const int bad_capacity[] = { 0, -1, T + 1, INT_MAX, INT_MIN };
    for (size_t i = 0; i < sizeof(bad_capacity) / sizeof(bad_capacity[0]); i++) {
        expect_seq_fails(m, bad_capacity[i], NGPT_ERROR, "sequence capacity", "out of range");
    }
    expect_seq_fails(NULL, 4, NGPT_ERROR, "a sequence of no model", "not a live model");
    err[0] = '\0';
    expect_error(ngpt_seq_new(m, 4, NULL, err, sizeof(err)) == NGPT_ERROR, "nowhere to put the sequence", "nowhere");
    free_blocks_are(m, pool_blocks, "after the refused sequences");

    ngpt_seq * s = new_seq(m, 4);
    expect_seq_fails((ngpt_model *) s, 4, NGPT_ERROR, "a sequence passed as a model", "not a live model");
    CHECK(ngpt_seq_free(s) == 0, "free a live sequence");
}

/* The pool: sequences take whole blocks, one adjacent run each, and a pool
 * without such a run says NGPT_KV_FULL, hands out nothing, and has room
 * again once a sequence goes. */
static void misuse_pool(ngpt_model * m, const fixture * f) {
    const int T = f->hp.n_ctx;
    const int64_t window = window_blocks(&f->hp);
    const size_t want_bytes = (size_t) NGPT_KV_BLOCK * 2 * (size_t) f->hp.n_layer * (size_t) f->hp.n_embd * sizeof(float);
    CHECK(ngpt_kv_block_bytes(&f->hp) == want_bytes, "a block of %zu bytes, want %zu", ngpt_kv_block_bytes(&f->hp),
          want_bytes);
    CHECK(ngpt_kv_block_bytes(NULL) == 0, "the block size of no hyper-parameters");
    ngpt_hparams bad = f->hp;
    bad.n_layer = -1;
    CHECK(ngpt_kv_block_bytes(&bad) == 0, "the block size of a negative layer count");
    bad = f->hp;
    bad.n_head = 3;
    CHECK(ngpt_kv_block_bytes(&bad) == 0, "the block size of hyper-parameters the load refuses");

    ngpt_kv_stats st = { -1, -1 };
    ngpt_kv_stats_get(NULL, &st);
    CHECK(st.blocks == 0 && st.free_blocks == 0, "stats of no model: %lld, %lld", (long long) st.blocks,
          (long long) st.free_blocks);
    ngpt_seq * probe = new_seq(m, 1);
    st.blocks = st.free_blocks = -1;
    ngpt_kv_stats_get((const ngpt_model *) probe, &st);
    CHECK(st.blocks == 0 && st.free_blocks == 0, "stats of a sequence passed as a model");
    ngpt_kv_stats_get(m, NULL);  /* nowhere to put them: nothing happens */
    CHECK(ngpt_seq_free(probe) == 0, "free the probe");

    /* A window, then sequences of one position until the pool is full: one
     * block each, so exactly the blocks the window left. Then nothing fits,
     * not one position, until something goes. */
    free_blocks_are(m, pool_blocks, "an empty pool");
    ngpt_seq * whole = new_seq(m, T);
    free_blocks_are(m, pool_blocks - window, "one window taken");
    ngpt_seq ** ones = calloc((size_t) pool_blocks, sizeof(*ones));
    for (int64_t i = 0; i < pool_blocks - window; i++) {
        ones[i] = new_seq(m, 1);
    }
    free_blocks_are(m, 0, "the pool filled");
    expect_seq_fails(m, 1, NGPT_KV_FULL, "one position in a full pool", "no run");
    expect_seq_fails(m, T, NGPT_KV_FULL, "a window in a full pool", "no run");
    CHECK(ngpt_seq_free(ones[0]) == 0, "free a one-block sequence");
    ones[0] = new_seq(m, 1);
    CHECK(ngpt_seq_free(whole) == 0, "free the window");
    whole = new_seq(m, T);
    CHECK(ngpt_seq_free(whole) == 0, "free the window again");
    for (int64_t i = 0; i < pool_blocks - window; i++) {
        CHECK(ngpt_seq_free(ones[i]) == 0, "free a one-block sequence");
    }
    free_blocks_are(m, pool_blocks, "after every sequence went");

    /* pool_blocks sequences of one position fill it. Every other one freed
     * leaves free blocks enough but no two adjacent: a sequence needing two
     * blocks is refused, one needing one is not. */
    for (int64_t i = 0; i < pool_blocks; i++) {
        ones[i] = new_seq(m, 1);
    }
    expect_seq_fails(m, 1, NGPT_KV_FULL, "one position in a pool of one-position sequences", "no run");
    for (int64_t i = 0; i < pool_blocks; i += 2) {
        CHECK(ngpt_seq_free(ones[i]) == 0, "free a one-block sequence");
        ones[i] = NULL;
    }
    free_blocks_are(m, (pool_blocks + 1) / 2, "every other block freed");
    if (T > NGPT_KV_BLOCK) {
        expect_seq_fails(m, NGPT_KV_BLOCK + 1, NGPT_KV_FULL, "two blocks where no two free blocks are adjacent",
                         "no run");
    }
    ngpt_seq * hole = new_seq(m, NGPT_KV_BLOCK < T ? NGPT_KV_BLOCK : T);
    CHECK(ngpt_seq_free(hole) == 0, "free a sequence in a hole");
    for (int64_t i = 0; i < pool_blocks; i++) {
        CHECK(ngpt_seq_free(ones[i]) == 0, "free a one-block sequence");
    }
    free(ones);
    free_blocks_are(m, pool_blocks, "after every sequence went");
}

/* ---------------------------------------------------------------- steps */

#define SENTINEL 12345.0f

/* A step that must fail and leave every output as it was. */
static void expect_step_fails(ngpt_model * m, const ngpt_item * items, int n_items, const char * what,
                              const char * want, float * logits, int n_vocab) {
    for (int i = 0; i < n_vocab; i++) {
        logits[i] = SENTINEL;
    }
    err[0] = '\0';
    expect_error(ngpt_step(m, items, n_items, err, sizeof(err)) != 0, what, want);
    bool untouched = true;
    for (int i = 0; i < n_vocab; i++) {
        untouched = untouched && logits[i] == SENTINEL;
    }
    CHECK(untouched, "%s: a failed step wrote the logits", what);
}

static void misuse_step(ngpt_model * m, ngpt_model * other, const fixture * f) {
    const int V = f->hp.n_vocab, L = f->hp.n_layer, H = f->hp.n_head;
    ngpt_seq * s = new_seq(m, 4);
    ngpt_seq * foreign = new_seq(other, 4);
    float * logits = malloc(sizeof(float) * (size_t) V);
    float rows[64 * 8];
    int32_t tokens[2] = { 65, 66 };
    const ngpt_item good = { .seq = s, .tokens = tokens, .n_tokens = 2, .n_past = 0, .logits = logits };
    expect_step_fails(NULL, &good, 1, "no model", "not a live model", logits, V);
    expect_step_fails((ngpt_model *) s, &good, 1, "a sequence as the model", "not a live model", logits, V);
    expect_step_fails(m, NULL, 1, "no items", "empty", logits, V);
    expect_step_fails(m, &good, 0, "0 items", "empty", logits, V);
    expect_step_fails(m, &good, -1, "-1 items", "empty", logits, V);
    int32_t layers[64 + 1] = { 0 };  /* zeroes: layer 0, listed as often as a case says */
    float mask[64 * 8];
    for (int j = 0; j < L * H; j++) {
        mask[j] = 1.0f;
    }
    for (int c = 0; c < 26; c++) {
        ngpt_item it = good;
        const char * what = "", * want = NULL;
        int32_t one = 0;
        switch (c) {
        case 0: it.seq = NULL; what = "no sequence"; want = "not a live sequence"; break;
        case 1: it.seq = foreign; what = "another model's sequence"; want = "of this model"; break;
        case 2: it.seq = (ngpt_seq *) m; what = "a model as the sequence"; want = "not a live sequence"; break;
        case 3: it.tokens = NULL; what = "no tokens"; want = "no tokens"; break;
        case 4: it.n_tokens = 0; what = "0 tokens"; want = "no tokens"; break;
        case 5: it.n_tokens = -1; what = "-1 tokens"; want = "no tokens"; break;
        case 6: it.n_past = -1; what = "n_past -1"; want = "exceed the cache"; break;
        case 7: it.n_past = 3; what = "past the cache's end"; want = "exceed the cache"; break;
        case 8: it.n_past = INT_MAX; what = "n_past INT_MAX"; want = "exceed the cache"; break;
        case 9: it.n_past = 1; it.n_tokens = INT_MAX; what = "n_tokens INT_MAX"; want = "exceed the cache"; break;
        case 10: tokens[1] = -1; what = "token -1"; want = "token -1 out of range"; break;
        case 11: tokens[1] = V; what = "token n_vocab"; want = "out of range"; break;
        case 12: one = L; it.n_trace = 1; it.trace_layers = &one; it.attn_rows = rows;
                 what = "trace layer n_layer"; want = "traced layer"; break;
        case 13: one = -1; it.n_trace = 1; it.trace_layers = &one; it.attn_rows = rows;
                 what = "trace layer -1"; want = "traced layer -1 out of range"; break;
        case 14: it.n_trace = 1; it.trace_layers = layers; what = "trace without a buffer"; want = "buffer NULL"; break;
        case 15: it.n_trace = 1; it.attn_rows = rows; what = "trace without a list"; want = "list NULL"; break;
        case 16: it.n_trace = 2; it.trace_layers = layers; it.attn_rows = rows;
                 what = "a traced layer twice"; want = "listed twice"; break;
        case 17: it.n_trace = L + 1; it.trace_layers = layers; it.attn_rows = rows;
                 what = "more traced layers than the model has"; want = "bad traced layers"; break;
        case 18: it.n_trace = -1; it.trace_layers = layers; it.attn_rows = rows;
                 what = "-1 traced layers"; want = "bad traced layers"; break;
        case 19: one = L; it.n_full = 1; it.full_layers = &one; it.full_attn = rows;
                 what = "full layer n_layer"; want = "full-attention layer"; break;
        case 20: it.n_full = 2; it.full_layers = layers; it.full_attn = rows;
                 what = "a full layer twice"; want = "listed twice"; break;
        case 21: it.n_full = 1; it.full_layers = layers; what = "full attention without a buffer"; want = "buffer NULL"; break;
        case 22: it.logits = NULL; it.lens = rows; what = "the lens without logits"; want = "needs logits"; break;
        case 23: mask[1] = 0.5f; it.head_mask = mask; what = "a head mask of 0.5"; want = "head mask entry 1"; break;
        case 24: mask[L * H - 1] = NAN; it.head_mask = mask; what = "a NaN head mask"; want = "is not 0 or 1"; break;
        case 25: mask[0] = -0.0f; mask[1] = 2.0f; it.head_mask = mask; what = "a head mask of 2"; want = "head mask entry 1"; break;
        }
        expect_step_fails(m, &it, 1, what, want, logits, V);
        tokens[1] = 66;
        for (int j = 0; j < L * H; j++) {
            mask[j] = 1.0f;
        }
    }
    ngpt_item twice[2] = { good, good };
    twice[1].logits = NULL;
    expect_step_fails(m, twice, 2, "one sequence twice in a step", "twice", logits, V);
    free(logits);
    ngpt_seq_free(foreign);
    ngpt_seq_free(s);
}

/* The same step before and after all the misuse: exactly the same logits,
 * so nothing refused left a mark on the model. */
static void one_step(ngpt_model * m, float * logits) {
    ngpt_seq * s = new_seq(m, 4);
    const int32_t tokens[3] = { 104, 105, 33 };
    ngpt_item it = { .seq = s, .tokens = tokens, .n_tokens = 3, .n_past = 0, .logits = logits };
    if (ngpt_step(m, &it, 1, err, sizeof(err)) != 0) {
        die("a good step: %s", err);
    }
    ngpt_seq_free(s);
}

/* ---------------------------------------------------------------- freeing */

static void misuse_free(ngpt_model * m) {
    CHECK(ngpt_model_free(NULL) == 0, "freeing NULL is a no-op");
    CHECK(ngpt_seq_free(NULL) == 0, "freeing a NULL sequence is a no-op");
    CHECK(ngpt_model_free((ngpt_model *) &err) != 0, "freeing what is not a model");

    ngpt_seq * s = new_seq(m, 4);
    CHECK(ngpt_model_free(m) != 0, "a model with a live sequence was freed");
    CHECK(ngpt_seq_free((ngpt_seq *) m) != 0, "a model freed as a sequence");
    CHECK(ngpt_seq_free(s) == 0, "free a sequence");
    /* s is freed: everything below reads a dead handle, as a caller with a
     * double free would. ASan's quarantine keeps its memory unused, and the
     * library asks ASan before reading it. */
    CHECK(ngpt_seq_free(s) != 0, "a second free of a sequence was not reported");
    free_blocks_are(m, pool_blocks, "after a second free of a sequence");  /* its blocks went back once */
    const int32_t token = 65;
    ngpt_item it = { .seq = s, .tokens = &token, .n_tokens = 1 };
    err[0] = '\0';
    expect_error(ngpt_step(m, &it, 1, err, sizeof(err)) != 0, "step a freed sequence", "not a live sequence");

    CHECK(ngpt_model_free(m) == 0, "free the model once its sequences are gone");
    CHECK(ngpt_model_free(m) != 0, "a second free of a model was not reported");
    CHECK(strcmp(ngpt_model_backend(m), "") == 0, "a freed model still names a backend");
    CHECK(ngpt_graphs_built(m) == 0 && ngpt_graphs_built(NULL) == 0, "graphs counted for a freed or NULL model");
    expect_seq_fails(m, 4, NGPT_ERROR, "a sequence of a freed model", "not a live model");
    ngpt_kv_stats st = { -1, -1 };
    ngpt_kv_stats_get(m, &st);
    CHECK(st.blocks == 0 && st.free_blocks == 0, "stats of a freed model");
    err[0] = '\0';
    expect_error(ngpt_step(m, &it, 1, err, sizeof(err)) != 0, "step a freed model", "not a live model");
}

/* ---------------------------------------------------------------- backends */

static void misuse_backends(const char * file, const char * dir, const fixture * f) {
    err[0] = '\0';
    expect_error(ngpt_backends_load(NULL, err, sizeof(err)) != 0, "no backend folder", "no backend folder");
    err[0] = '\0';
    expect_error(ngpt_backends_load("", err, sizeof(err)) != 0, "an empty backend folder name", "no backend folder");
    err[0] = '\0';
    expect_error(ngpt_backends_load("/no/such/folder", err, sizeof(err)) != 0, "a missing folder", "No such file");
    err[0] = '\0';
    expect_error(ngpt_backends_load(file, err, sizeof(err)) != 0, "a file as the folder", "not a folder");
    char empty[] = "/tmp/nielsgpt-test-XXXXXX";
    if (mkdtemp(empty) == NULL) {
        die("mkdtemp");
    }
    err[0] = '\0';
    expect_error(ngpt_backends_load(empty, err, sizeof(err)) != 0, "a folder with no modules", "no ggml backend module");
    rmdir(empty);
    if (dir == NULL) {
        return;
    }
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == NULL) {
        /* a build with its backends as modules has no CPU until one loads */
        expect_load_fails("cpu before any module is loaded", "no CPU backend", f, &f->hp, f->blob_len, f->refs,
                          f->n_refs, "cpu", 1);
    }
    CHECK(ngpt_backends_load(dir, err, sizeof(err)) == 0, "load %s: %s", dir, err);
    const size_t n_regs = ggml_backend_reg_count();
    CHECK(ngpt_backends_load(dir, err, sizeof(err)) == 0, "load %s again: %s", dir, err);
    CHECK(ggml_backend_reg_count() == n_regs, "loading %s again registered its modules twice", dir);
}

int main(int argc, char ** argv) {
    if (argc != 2 && argc != 3) {
        die("usage: test_misuse FIXTURE.gguf [BACKEND_DIR]");
    }
    fixture f = load_fixture(argv[1]);
    pool_blocks = window_blocks(&f.hp) + 2;
    misuse_backends(argv[1], argc == 3 ? argv[2] : NULL, &f);
    misuse_load(&f);

    ngpt_model * m = load_model(&f, "cpu", pool_blocks), * other = load_model(&f, "cpu", pool_blocks);
    float * before = malloc(sizeof(float) * (size_t) f.hp.n_vocab);
    float * after  = malloc(sizeof(float) * (size_t) f.hp.n_vocab);
    one_step(m, before);
    misuse_seqs(m, &f);
    misuse_pool(m, &f);
    misuse_step(m, other, &f);
    one_step(m, after);
    CHECK(memcmp(before, after, sizeof(float) * (size_t) f.hp.n_vocab) == 0,
          "the model computes differently after the refused calls");
    misuse_free(m);
    CHECK(ngpt_model_free(other) == 0, "free the other model");
    free(before);
    free(after);
    free_fixture(&f);
    if (test_failures > 0) {
        fprintf(stderr, "%d checks failed\n", test_failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
