/*
 * testutil.c — fixtures and goldens for the C tests (see testutil.h).
 */
#include "testutil.h"

#include "ggml.h"
#include "gguf.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int test_failures = 0;

void die(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FATAL: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void * read_file(const char * path, size_t * len) {
    FILE * f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open %s", path);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char * data = malloc((size_t) size + 1);
    if (data == NULL || size < 0 || fread(data, 1, (size_t) size, f) != (size_t) size) {
        die("cannot read %s", path);
    }
    fclose(f);
    data[size] = '\0';  /* so the goldens can be searched as text */
    *len = (size_t) size;
    return data;
}

/* ---------------------------------------------------------------- fixtures */

static int32_t key_u32(const struct gguf_context * g, const char * key) {
    int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_UINT32) {
        die("fixture: no uint32 %s", key);
    }
    return (int32_t) gguf_get_val_u32(g, id);
}

static float key_f32(const struct gguf_context * g, const char * key) {
    int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_FLOAT32) {
        die("fixture: no float32 %s", key);
    }
    return gguf_get_val_f32(g, id);
}

fixture load_fixture(const char * gguf_path) {
    fixture f = {0};
    struct ggml_context * meta = NULL;
    struct gguf_init_params params = { .no_alloc = true, .ctx = &meta };
    struct gguf_context * g = gguf_init_from_file(gguf_path, params);
    if (g == NULL) {
        die("%s: not a GGUF file (run the fixture step: ctest -R fixture)", gguf_path);
    }
    /* the keys of gguf/schema.go */
    f.hp.n_vocab    = key_u32(g, "nielsgpt.vocab_size");
    f.hp.n_ctx      = key_u32(g, "nielsgpt.context_length");
    f.hp.n_embd     = key_u32(g, "nielsgpt.embedding_length");
    f.hp.n_layer    = key_u32(g, "nielsgpt.block_count");
    f.hp.n_head     = key_u32(g, "nielsgpt.attention.head_count");
    f.hp.n_ff       = key_u32(g, "nielsgpt.feed_forward_length");
    f.hp.rope_theta = key_f32(g, "nielsgpt.rope.freq_base");
    if (key_u32(g, "nielsgpt.generation") == 2) {
        f.hp.norm_type = NGPT_NORM_RMS;
        f.hp.mlp_type  = NGPT_MLP_SWIGLU;
        f.hp.norm_eps  = key_f32(g, "nielsgpt.attention.layer_norm_rms_epsilon");
    } else {
        f.hp.norm_eps  = key_f32(g, "nielsgpt.attention.layer_norm_epsilon");
    }

    f.n_refs = (int) gguf_get_n_tensors(g);
    f.refs   = calloc((size_t) f.n_refs, sizeof(*f.refs));
    const size_t data_offset = gguf_get_data_offset(g);
    for (int i = 0; i < f.n_refs; i++) {
        ngpt_tensor_ref * r = &f.refs[i];
        const char * name = gguf_get_tensor_name(g, i);
        const struct ggml_tensor * t = ggml_get_tensor(meta, name);
        snprintf(r->name, sizeof(r->name), "%s", name);
        r->type   = (int32_t) gguf_get_tensor_type(g, i);
        r->n_dims = ggml_n_dims(t);
        r->ne[0]  = t->ne[0];
        r->ne[1]  = t->ne[1];
        r->offset = data_offset + gguf_get_tensor_offset(g, i);
        r->nbytes = gguf_get_tensor_size(g, i);
    }
    gguf_free(g);
    ggml_free(meta);
    f.blob = read_file(gguf_path, &f.blob_len);
    return f;
}

void free_fixture(fixture * f) {
    free(f->refs);
    free(f->blob);
    f->refs = NULL;
    f->blob = NULL;
}

int64_t window_blocks(const ngpt_hparams * hp) {
    return (hp->n_ctx + NGPT_KV_BLOCK - 1) / NGPT_KV_BLOCK;
}

ngpt_model * load_model(const fixture * f, const char * device, int64_t kv_blocks) {
    char err[256];
    ngpt_model * m = ngpt_model_load(&f->hp, f->blob, f->blob_len, f->refs, f->n_refs, device, 1, kv_blocks, err,
                                     sizeof(err));
    if (m == NULL) {
        die("loading the fixture: %s", err);
    }
    return m;
}

ngpt_seq * new_seq(ngpt_model * m, int capacity) {
    char err[256];
    ngpt_seq * s = NULL;
    if (ngpt_seq_new(m, capacity, &s, err, sizeof(err)) != NGPT_OK) {
        die("a sequence of %d positions: %s", capacity, err);
    }
    return s;
}

/* ---------------------------------------------------------------- goldens */

char * read_golden(const char * path) {
    size_t len;
    return read_file(path, &len);
}

/* Where the value of "key" starts, after "section". */
static const char * find_value(const char * text, const char * section, const char * key) {
    char pattern[96];
    snprintf(pattern, sizeof(pattern), "\"%s\"", section);
    const char * p = strstr(text, pattern);
    snprintf(pattern, sizeof(pattern), "\"%s\":", key);
    p = p ? strstr(p, pattern) : NULL;
    if (p == NULL) {
        die("golden: no %s.%s", section, key);
    }
    return p + strlen(pattern);
}

double * golden_numbers(const char * text, const char * section, const char * key, size_t * n) {
    const char * p = find_value(text, section, key);
    size_t cap = 1024, count = 0;
    double * out = malloc(cap * sizeof(*out));
    int depth = 0;
    p += strspn(p, " \n\r\t");
    do {  /* one number, or an array: nested arrays are read until it closes */
        if (*p == '[') {
            depth++;
            p++;
        } else if (*p == ']') {
            depth--;
            p++;
        } else if (*p == ',' || *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
            p++;
        } else {
            char * end;
            double v = strtod(p, &end);
            if (end == p) {
                die("golden: %s.%s: not a number at \"%.20s\"", section, key, p);
            }
            if (count == cap) {
                cap *= 2;
                out = realloc(out, cap * sizeof(*out));
            }
            out[count++] = v;
            p = end;
        }
    } while (depth > 0);
    *n = count;
    return out;
}

int golden_int(const char * text, const char * section, const char * key) {
    size_t n;
    double * v = golden_numbers(text, section, key, &n);
    if (n != 1 || v[0] != floor(v[0])) {
        die("golden: %s.%s is not one integer", section, key);
    }
    int out = (int) v[0];
    free(v);
    return out;
}

double max_abs_diff(const float * a, const double * b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double) a[i] - b[i]);
        worst = d > worst || isnan(d) ? d : worst;
    }
    return worst;
}
