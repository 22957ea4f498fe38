/*
 * nielsgpt.c — niels-gpt on ggml: weights, a pool of KV blocks that every
 * sequence's cache comes from, and one batched forward graph per step, kept
 * and run again while the batch keeps its shape. Both generations run the
 * same graph: the model's norm and MLP kinds choose what build_norm and
 * build_mlp put in it.
 *
 * The maths mirrors the PyTorch reference models (scripts/niels_gpt.py and
 * scripts/niels_gpt2.py; see docs/ARCHITECTURE.md) line by line: the PyTorch statement is in the comment
 * beside each op. Shapes are written in ggml order: [ne0, ne1, ne2], ne0
 * fastest. C = width, D = head size, H = heads, F = d_ff, V = vocabulary,
 * N = tokens in this step (all sequences), n = one sequence's new tokens,
 * t = n_past + n (the keys one sequence attends to).
 *
 * A step runs the way ggml's own examples split graph from evaluation: check
 * the items, find the step's graph among those kept (or build one and plan
 * its memory), upload the inputs, choose the threads, compute, read the
 * outputs back. Sections: loading, threads, model, KV pool, sequences,
 * step (items, shape, graph, evaluation).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* dladdr */
#endif
#include "nielsgpt.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#ifdef __linux__
#include <fcntl.h>
#endif
#include <unistd.h>

/* AddressSanitizer, under gcc or clang: the handle checks ask it whether
 * memory was freed before reading it. */
#if defined(__SANITIZE_ADDRESS__)
#define NGPT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NGPT_ASAN 1
#endif
#endif
#ifdef NGPT_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* ---------------------------------------------------------------- errors */

static void set_err(char * err, size_t err_len, const char * fmt, ...) {
    if (err == NULL || err_len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static void set_oom(char * err, size_t err_len) {
    set_err(err, err_len, "out of memory");
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* ---------------------------------------------------------------- model */

/* Step graphs kept for reuse: a decode batch keeps its shape for ATTN_PAD
 * tokens, and a few shapes alternate (decode steps, steps with a prompt
 * chunk, a window being recomputed). */
#define N_GRAPHS 4

struct step_graph;
struct item_key;
struct thread_choice;
static struct step_graph * new_graphs(void);
static bool init_kv_pool(struct ngpt_model * m, int64_t n_blocks, char * err, size_t err_len);
static bool init_panels(struct ngpt_model * m, char * err, size_t err_len);
static void free_graphs(struct ngpt_model * m);

/* The MLP's weights are named by role: generation 1's fc1 and fc2 are up
 * and down, generation 2's fc_a, fc_g and fc_out are up, gate and down. */
typedef struct ngpt_layer {
    struct ggml_tensor * ln1_w;   /* [C]      blocks.i.ln1.weight */
    struct ggml_tensor * ln1_b;   /* [C]      blocks.i.ln1.bias (LayerNorm only) */
    struct ggml_tensor * qkv_w;   /* [C, 3C]  blocks.i.attn.qkv.weight */
    struct ggml_tensor * proj_w;  /* [C, C]   blocks.i.attn.proj.weight */
    struct ggml_tensor * ln2_w;   /* [C]      blocks.i.ln2.weight */
    struct ggml_tensor * ln2_b;   /* [C]      blocks.i.ln2.bias (LayerNorm only) */
    struct ggml_tensor * up_w;    /* [C, F]   blocks.i.mlp.fc1.weight | mlp.fc_a.weight */
    struct ggml_tensor * up_b;    /* [F]      blocks.i.mlp.fc1.bias   | mlp.fc_a.bias */
    struct ggml_tensor * gate_w;  /* [C, F]   blocks.i.mlp.fc_g.weight (SwiGLU only) */
    struct ggml_tensor * gate_b;  /* [F]      blocks.i.mlp.fc_g.bias   (SwiGLU only) */
    struct ggml_tensor * down_w;  /* [F, C]   blocks.i.mlp.fc2.weight | mlp.fc_out.weight */
    struct ggml_tensor * down_b;  /* [C]      blocks.i.mlp.fc2.bias   | mlp.fc_out.bias */
} ngpt_layer;

/* Handles start with these, and freeing clears them (nielsgpt.h: Handles). */
#define MODEL_MAGIC 0x4c444f4d5450474eULL  /* "NGPTMODL" */
#define SEQ_MAGIC   0x5145535f5450474eULL  /* "NGPT_SEQ" */

struct ngpt_model {
    uint64_t     magic;
    int          n_seqs;  /* live sequences: the model outlives their caches */
    ngpt_hparams hp;

    struct ggml_tensor * tok_emb;  /* [C, V] tok_emb.weight, also lm_head.weight (tied) */
    struct ggml_tensor * lnf_w;    /* [C]    ln_f.weight */
    struct ggml_tensor * lnf_b;    /* [C]    ln_f.bias (LayerNorm only) */
    ngpt_layer         * layers;   /* [L] */

    ggml_backend_t          backend;
    char                    backend_desc[128];  /* ngpt_model_backend */
    /* CPU only: two persistent threadpools, one chosen per step (see
     * choose_threads); NULL on other devices. The functions that drive them
     * come from the device's own registry entry (see init_threads). */
    struct ggml_threadpool * tp_one;      /* the calling thread alone */
    struct ggml_threadpool * tp_all;      /* n_threads; NULL when that is 1 */
    int                      n_threads;
    int                      threads_now; /* what the backend is set to use */
    struct thread_choice   * choice;      /* how fast shared steps ran on each pool */
    ggml_backend_set_n_threads_t set_n_threads;
    void (* set_threadpool)(ggml_backend_t, struct ggml_threadpool *);
    void (* threadpool_free)(struct ggml_threadpool *);
    struct ggml_context   * weights_ctx;
    ggml_backend_buffer_t   weights_buf;
    ggml_gallocr_t          galloc;       /* compute memory, reused across steps */

    /* The KV pool (see the KV pool section). */
    int64_t                 kv_blocks;
    int64_t                 kv_free;
    uint8_t               * kv_used;      /* [kv_blocks] 1 where a sequence holds the block */
    struct ggml_context   * kv_ctx;
    ggml_backend_buffer_t   kv_buf;
    struct ggml_tensor   ** kv_k;         /* [L] of [C, P]: keys after rotary, a row per position */
    struct ggml_tensor   ** kv_v;         /* [L] of [P·C]: each run's values, transposed within the run */

    /* Step graphs kept for reuse (see find_graph). A graph's memory plan
     * stays valid while the compute buffer is not reallocated: plan_gen
     * counts reallocations, plan_size is the buffer's size after the last. */
    struct step_graph * graphs;      /* [N_GRAPHS] */
    struct item_key   * keys;        /* [keys_cap] the current step's keys */
    int                 keys_cap;
    uint64_t            n_steps;
    uint64_t            graphs_built;  /* ngpt_graphs_built */
    uint64_t            plan_gen;
    size_t              plan_size;

    void * stage;      /* one step's inputs on their way to the device */
    size_t stage_size;

    /* CPU with AVX-512 only: each thread's packed panel of activations for
     * panel_mul_mat ([n_threads] of [panel_k · PANEL_COLS] floats), also
     * decode_attn_op's scratch. NULL where ggml's kernels are used for
     * everything (products, GELU, attention) and the linear layers are
     * stored as the file has them. */
    float * panels;
    int     panel_k;   /* the longest reduction a panel holds */
};

/* A sequence's cache is the run of pool blocks it holds: pool positions
 * first .. first + capacity − 1, its positions 0 .. capacity − 1. */
struct ngpt_seq {
    uint64_t     magic;
    ngpt_model * model;
    int64_t      first_block;
    int          n_blocks;
    int64_t      first;      /* first_block · NGPT_KV_BLOCK */
    int          capacity;   /* n_blocks · NGPT_KV_BLOCK: the run's length, its V rows' stride */
    int          positions;  /* what ngpt_seq_new was asked for (≤ capacity): the positions items may use */
    int          clean;      /* positions 0 .. clean − 1 hold finite values, see clean_caches */
};

/* ---------------------------------------------------------------- handles */

/* Whether p points into freed memory. Only AddressSanitizer knows; without
 * it the magic number, cleared on free, is what catches a freed handle. */
static bool is_freed(const void * p) {
#ifdef NGPT_ASAN
    return __asan_address_is_poisoned(p) != 0;
#else
    (void) p;
    return false;
#endif
}

static bool model_live(const ngpt_model * m) {
    return m != NULL && !is_freed(m) && m->magic == MODEL_MAGIC;
}

static bool seq_live(const ngpt_seq * s) {
    return s != NULL && !is_freed(s) && s->magic == SEQ_MAGIC;
}

/* ---------------------------------------------------------------- loading */

/* A weight the graph will read, with the dims it must have. */
typedef struct weight_spec {
    char                  name[64];
    struct ggml_tensor ** dst;
    int                   n_dims;
    int64_t               ne0, ne1;
    int                   segments; /* a block's linear layer: how many products it holds side by side
                                     * (3 for q, k, v), stored packed where our products run; else 0 */
} weight_spec;

/* How many tensors the architecture has: the embedding, three norms per
 * model (ln1, ln2 per block, ln_f) of one or two vectors, attention's two
 * matrices and the MLP's two or three linears with biases. */
static int n_weights(const ngpt_hparams * hp) {
    const int norm = hp->norm_type == NGPT_NORM_RMS ? 1 : 2;
    const int mlp  = hp->mlp_type == NGPT_MLP_SWIGLU ? 6 : 4;
    return 1 + norm + hp->n_layer * (2 * norm + 2 + mlp);
}

static void set_spec(weight_spec * s, struct ggml_tensor ** dst, int n_dims, int64_t ne0, int64_t ne1,
                     const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof(s->name), fmt, ap);
    va_end(ap);
    s->dst    = dst;
    s->n_dims = n_dims;
    s->ne0    = ne0;
    s->ne1    = ne1;
    s->segments = 0;
}

/* A block's linear layer: [in, out], in PyTorch's [out, in] order, of
 * segments products side by side. (The embedding, lm_head's weight, is
 * one too.) */
static void set_linear(weight_spec * s, struct ggml_tensor ** dst, int64_t in, int64_t out, int segments,
                       const char * fmt, int layer) {
    set_spec(s, dst, 2, in, out, fmt, layer);
    s->segments = segments;
}

/* One norm's specs: its weight, and its bias for LayerNorm (an RMSNorm's
 * bias pointer stays NULL, which build_norm reads as none). */
static weight_spec * norm_specs(const ngpt_model * m, weight_spec * s, struct ggml_tensor ** w,
                                struct ggml_tensor ** b, const char * name) {
    const int64_t C = m->hp.n_embd;
    set_spec(s++, w, 1, C, 1, "%s.weight", name);
    if (m->hp.norm_type == NGPT_NORM_LAYER) {
        set_spec(s++, b, 1, C, 1, "%s.bias", name);
    }
    return s;
}

/* Every weight of the architecture, under its GGUF name; fills
 * n_weights(&m->hp) specs. */
static void list_weights(ngpt_model * m, weight_spec * specs) {
    const int64_t C = m->hp.n_embd, V = m->hp.n_vocab, F = m->hp.n_ff;
    char name[48];
    weight_spec * s = specs;
    set_spec(s, &m->tok_emb, 2, C, V, "token_embd.weight");
    s->segments = 1;   /* also lm_head, a linear layer: packed too (see embed) */
    s++;
    s = norm_specs(m, s, &m->lnf_w, &m->lnf_b, "output_norm");
    for (int i = 0; i < m->hp.n_layer; i++) {
        ngpt_layer * l = &m->layers[i];
        snprintf(name, sizeof(name), "blk.%d.attn_norm", i);
        s = norm_specs(m, s, &l->ln1_w, &l->ln1_b, name);
        set_linear(s++, &l->qkv_w,  C, 3 * C, 3, "blk.%d.attn_qkv.weight", i);
        set_linear(s++, &l->proj_w, C, C,     1, "blk.%d.attn_output.weight", i);
        snprintf(name, sizeof(name), "blk.%d.ffn_norm", i);
        s = norm_specs(m, s, &l->ln2_w, &l->ln2_b, name);
        if (m->hp.mlp_type == NGPT_MLP_SWIGLU) {
            set_linear(s++, &l->gate_w, C, F, 1, "blk.%d.ffn_gate.weight", i);
            set_spec(s++, &l->gate_b, 1, F, 1, "blk.%d.ffn_gate.bias", i);
        }
        set_linear(s++, &l->up_w,   C, F, 1, "blk.%d.ffn_up.weight", i);
        set_spec(s++, &l->up_b,   1, F, 1, "blk.%d.ffn_up.bias", i);
        set_linear(s++, &l->down_w, F, C, 1, "blk.%d.ffn_down.weight", i);
        set_spec(s++, &l->down_b, 1, C, 1, "blk.%d.ffn_down.bias", i);
    }
}

static const ngpt_tensor_ref * find_ref(const ngpt_tensor_ref * refs, int n_refs, const char * name) {
    for (int i = 0; i < n_refs; i++) {
        if (strncmp(refs[i].name, name, sizeof(refs[i].name)) == 0) {
            return &refs[i];
        }
    }
    return NULL;
}

/* Find and check every weight's reference before ggml sees any of it: ggml's
 * own checks abort the process. found[i] gets the reference of specs[i]. */
static bool match_refs(const weight_spec * specs, int n_specs, const ngpt_tensor_ref * refs, int n_refs,
                       size_t blob_len, const ngpt_tensor_ref ** found, char * err, size_t err_len) {
    for (int i = 0; i < n_specs; i++) {
        const weight_spec * s = &specs[i];
        const ngpt_tensor_ref * r = find_ref(refs, n_refs, s->name);
        if (r == NULL) {
            set_err(err, err_len, "missing tensor %s", s->name);
            return false;
        }
        int64_t ne1 = r->n_dims == 2 ? r->ne[1] : 1;
        if (r->n_dims != s->n_dims || r->ne[0] != s->ne0 || ne1 != s->ne1) {
            set_err(err, err_len, "tensor %s has the wrong shape", s->name);
            return false;
        }
        size_t esize = r->type == GGML_TYPE_F32 ? 4 : r->type == GGML_TYPE_F16 ? 2 : 0;
        if (esize == 0) {
            set_err(err, err_len, "tensor %s: type %d is not F32 or F16", s->name, r->type);
            return false;
        }
        /* ggml's add and mul want F32 vectors; the Go GGUF reader already
         * refuses anything else, so this only guards other callers. */
        if (s->n_dims == 1 && r->type != GGML_TYPE_F32) {
            set_err(err, err_len, "tensor %s: vectors must be F32, not type %d", s->name, r->type);
            return false;
        }
        if (r->nbytes != (uint64_t) (s->ne0 * s->ne1) * esize || r->offset > blob_len ||
            r->nbytes > blob_len - r->offset) {
            set_err(err, err_len, "tensor %s: data size or offset out of range", s->name);
            return false;
        }
        found[i] = r;
    }
    if (n_refs != n_specs) {
        set_err(err, err_len, "%d tensors given, the architecture has %d", n_refs, n_specs);
        return false;
    }
    return true;
}

/* Whether w, a block's linear layer (or a view of one), is stored packed
 * for wt_mul_mat: F32 where our products run. */
static bool packed(const ngpt_model * m, const struct ggml_tensor * w) {
    return m->panels != NULL && w->type == GGML_TYPE_F32;
}

/* A linear layer's outputs go in tiles of WT_TILE, each tile's weights
 * stored as [in, WT_TILE] (input feature k's weights for the tile's
 * outputs, then k + 1's), so that wt_mul_mat reads a tile's weights as
 * one stream; a segment's last tile padded with zeros. */
#define WT_TILE 64

static int64_t wt_tiles(int64_t out) {
    return (out + WT_TILE - 1) / WT_TILE;
}

/* Copy a linear layer's [out, in] rows from the blob into t, packed: t is
 * [WT_TILE · in, tiles], a row per tile, segment after segment. */
static bool set_packed(struct ggml_tensor * t, const char * src, int64_t in, int64_t out, int segments) {
    const int64_t seg_out = out / segments, tiles = wt_tiles(seg_out);
    float * tmp = calloc((size_t) (segments * tiles * WT_TILE * in), sizeof(float));
    if (tmp == NULL) {
        return false;
    }
    for (int64_t r = 0; r < out; r++) {
        const int64_t sg = r / seg_out, o = r % seg_out;
        float * tile = tmp + (size_t) ((sg * tiles + o / WT_TILE) * WT_TILE * in);
        for (int64_t k = 0; k < in; k++) {
            memcpy(&tile[k * WT_TILE + o % WT_TILE], src + sizeof(float) * (size_t) (r * in + k), sizeof(float));
        }
    }
    ggml_backend_tensor_set(t, tmp, 0, ggml_nbytes(t));
    free(tmp);
    return true;
}

/* Create the weights, in the file's types, in one buffer on the device and
 * copy them there from the blob; the linears packed where our products run
 * (see wt_mul_mat). */
static bool load_weights(ngpt_model * m, const weight_spec * specs, int n_specs,
                         const ngpt_tensor_ref ** found, const void * blob, char * err, size_t err_len) {
    struct ggml_init_params ip = {
        .mem_size   = ggml_tensor_overhead() * (size_t) (n_specs + 1),
        .mem_buffer = NULL,
        .no_alloc   = true,
    };
    m->weights_ctx = ggml_init(ip);
    if (m->weights_ctx == NULL) {
        set_oom(err, err_len);
        return false;
    }
    for (int i = 0; i < n_specs; i++) {
        const weight_spec * s = &specs[i];
        enum ggml_type type = (enum ggml_type) found[i]->type;
        const bool pack = s->segments > 0 && m->panels != NULL && type == GGML_TYPE_F32;
        struct ggml_tensor * t =
            s->n_dims == 1 ? ggml_new_tensor_1d(m->weights_ctx, type, s->ne0)
            : pack         ? ggml_new_tensor_2d(m->weights_ctx, type, WT_TILE * s->ne0, s->segments * wt_tiles(s->ne1 / s->segments))
                           : ggml_new_tensor_2d(m->weights_ctx, type, s->ne0, s->ne1);
        ggml_set_name(t, s->name);
        *s->dst = t;
    }
    m->weights_buf = ggml_backend_alloc_ctx_tensors(m->weights_ctx, m->backend);
    if (m->weights_buf == NULL) {
        set_err(err, err_len, "cannot allocate the weights on the device");
        return false;
    }
    for (int i = 0; i < n_specs; i++) {
        const char * src = (const char *) blob + found[i]->offset;
        struct ggml_tensor * t = *specs[i].dst;
        if (specs[i].segments == 0 || !packed(m, t)) {
            ggml_backend_tensor_set(t, src, 0, found[i]->nbytes);
        } else if (!set_packed(t, src, specs[i].ne0, specs[i].ne1, specs[i].segments)) {
            set_oom(err, err_len);
            return false;
        }
    }
    return true;
}

static bool hparams_ok(const ngpt_hparams * hp, char * err, size_t err_len) {
    if (hp->n_vocab <= 0 || hp->n_ctx <= 0 || hp->n_embd <= 0 || hp->n_layer <= 0 ||
        hp->n_head <= 0 || hp->n_ff <= 0) {
        set_err(err, err_len, "hyper-parameters must be positive");
        return false;
    }
    if (hp->n_vocab > 1 << 20 || hp->n_ctx > 1 << 16 || hp->n_embd > 1 << 16 ||
        hp->n_layer > 1024 || hp->n_head > 1024 || hp->n_ff > 1 << 18) {
        set_err(err, err_len, "hyper-parameters out of the supported range");
        return false;
    }
    if (hp->n_embd % hp->n_head != 0 || (hp->n_embd / hp->n_head) % 2 != 0) {
        set_err(err, err_len, "n_embd %d must split into %d heads of even size", hp->n_embd, hp->n_head);
        return false;
    }
    if (!(hp->rope_theta > 0) || !(hp->norm_eps > 0) || !isfinite(hp->rope_theta) || !isfinite(hp->norm_eps)) {
        set_err(err, err_len, "rope_theta and norm_eps must be positive and finite");
        return false;
    }
    if (hp->norm_type != NGPT_NORM_LAYER && hp->norm_type != NGPT_NORM_RMS) {
        set_err(err, err_len, "norm_type %d is not NGPT_NORM_LAYER or NGPT_NORM_RMS", hp->norm_type);
        return false;
    }
    if (hp->mlp_type != NGPT_MLP_GELU && hp->mlp_type != NGPT_MLP_SWIGLU) {
        set_err(err, err_len, "mlp_type %d is not NGPT_MLP_GELU or NGPT_MLP_SWIGLU", hp->mlp_type);
        return false;
    }
    if (hp->kv_type != NGPT_KV_F32 && hp->kv_type != NGPT_KV_F16) {
        set_err(err, err_len, "kv_type %d is not NGPT_KV_F32 or NGPT_KV_F16", hp->kv_type);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- backends */

/* The shared object that holds addr, when it is not the one holding this
 * code: a backend loaded as a module. NULL for a built-in backend. */
static const char * module_of(const void * addr) {
    Dl_info where, self;
    if (dladdr(addr, &where) == 0 || where.dli_fname == NULL ||
        dladdr((const void *) module_of, &self) == 0 || where.dli_fbase == self.dli_fbase) {
        return NULL;
    }
    return where.dli_fname;
}

/* Whether a backend in the registry was loaded from a module in dir (a real
 * path): ggml would register a folder's modules a second time. */
static bool loaded_from(const char * dir) {
    const size_t n = strlen(dir);
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        const char * file = module_of(ggml_backend_reg_get(i));
        if (file && strncmp(file, dir, n) == 0 && file[n] == '/' && strchr(file + n + 1, '/') == NULL) {
            return true;
        }
    }
    return false;
}

int ngpt_backends_load(const char * dir, char * err, size_t err_len) {
    if (dir == NULL || dir[0] == '\0') {
        set_err(err, err_len, "no backend folder given");
        return 1;
    }
    char real[PATH_MAX];
    struct stat st;
    if (realpath(dir, real) == NULL || stat(real, &st) != 0) {
        set_err(err, err_len, "backend folder %s: %s", dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, err_len, "backend folder %s: not a folder", dir);
        return 1;
    }
    if (loaded_from(real)) {
        return 0;
    }
    const size_t before = ggml_backend_reg_count();
    /* The best-scoring libggml-cpu-*.so for this CPU, and every other kind
     * of backend ggml knows; modules that do not suit the machine are
     * skipped, silently. */
    ggml_backend_load_all_from_path(real);
    if (ggml_backend_reg_count() == before) {
        set_err(err, err_len, "backend folder %s: no ggml backend module there loads on this machine "
                "(want libggml-cpu-*.so, libggml-cuda.so, ... and their libggml-base.so)", dir);
        return 1;
    }
    return 0;
}

/* The first device of the type whose backend is named reg_name (any when
 * NULL). A device from a loaded module wins over a built-in one of its kind:
 * loading a folder of modules is asking for them. Among modules, ggml's
 * registry lists the best-scoring first: the CPU variant that suits this
 * machine best. */
static ggml_backend_dev_t find_device(enum ggml_backend_dev_type type, const char * reg_name) {
    ggml_backend_dev_t built_in = NULL;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
        const enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
        const bool gpu = t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU;
        if ((t != type && !(type == GGML_BACKEND_DEVICE_TYPE_GPU && gpu)) ||
            (reg_name != NULL && strcmp(ggml_backend_reg_name(reg), reg_name) != 0)) {
            continue;
        }
        if (module_of(reg) != NULL) {
            return dev;
        }
        built_in = built_in ? built_in : dev;
    }
    return built_in;
}

static ggml_backend_dev_t pick_device(const char * device, char * err, size_t err_len) {
    ggml_backend_dev_t dev = NULL;
    if (device == NULL || strcmp(device, "") == 0 || strcmp(device, "cpu") == 0) {
        dev = find_device(GGML_BACKEND_DEVICE_TYPE_CPU, NULL);
        if (dev == NULL) {
            set_err(err, err_len, "no CPU backend: this ggml has its backends as modules, and none is "
                    "loaded (ngpt_backends_load; BACKEND_DIR)");
        }
    } else if (strcmp(device, "cuda") == 0) {
        dev = find_device(GGML_BACKEND_DEVICE_TYPE_GPU, "CUDA");
        if (dev == NULL) {
            set_err(err, err_len, "device cuda: no CUDA device (it needs libggml-cuda.so in BACKEND_DIR, "
                    "built with NIELSGPT_CUDA, and an NVIDIA GPU with its driver)");
        }
    } else if (strcmp(device, "metal") == 0 || strcmp(device, "mps") == 0) {
        dev = find_device(GGML_BACKEND_DEVICE_TYPE_GPU, "Metal");
        if (dev == NULL) {
            set_err(err, err_len, "device %s: this build of ggml has no Metal backend", device);
        }
    } else if (strcmp(device, "gpu") == 0) {
        dev = find_device(GGML_BACKEND_DEVICE_TYPE_GPU, NULL);
        if (dev == NULL) {
            set_err(err, err_len, "device gpu: ggml has no GPU backend here");
        }
    } else {
        set_err(err, err_len, "unknown device %s (want cpu, cuda, metal, mps or gpu)", device);
    }
    return dev;
}

/* ---------------------------------------------------------------- threads */

/* ggml's CPU workers meet at a spinning barrier after every op. On two cores
 * shared with the Go side (sampling, encoding, writing to sockets) or with
 * other processes, a worker that is descheduled makes the others spin for a
 * whole time slice, so a pool that always claims every core collapses under
 * load (a 40 ms window step took 600 ms on a machine with load 6). So each
 * step chooses. Decode steps (short ops, a barrier each) run on the calling
 * thread alone. Steps that feed prompt chunks or recompute a window (long
 * matmuls, few ops) run on every thread while that is faster: the model
 * times both choices on such steps as they run (see choose_threads), and
 * keeps to one thread while the machine is too busy for two to help.
 * Switching pools pauses the one left, so its workers sleep (poll = 0)
 * until a shared step wakes them. And while other processes keep the
 * cores busy, shared steps run on one thread without trying more: one
 * step on two threads there can take a second. */

/* Seconds per token of shared steps on one thread ([0]) and on every
 * thread ([1]), averaged as they run; 0 while not yet measured. The choice
 * not taken is tried again now and then, less often each time it loses, so
 * a busy spell costs a few slow steps rather than many. */
typedef struct thread_choice {
    double   cost[2];
    double   others;      /* cores other processes kept busy lately, see others_busy */
    double   others_avg;  /* the same, averaged over some seconds */
    double   seen_at;     /* when the busy times below were read; 0: never */
    double   seen_busy;   /* the machine's busy time then, seconds, all cores */
    double   seen_mine;   /* this process's CPU time then */
    int      n_cpus;      /* online cores */
    uint64_t n_shared;    /* shared steps so far */
    uint64_t next_probe;  /* the shared step on which to try the other choice */
    uint64_t probe_gap;
    int      probing;     /* the choice being tried, or −1 */
} thread_choice;

#define PROBE_GAP_MIN  16
#define PROBE_GAP_MAX  4096
#define COST_WEIGHT    0.25   /* of each new measurement in the average */

/* Other processes may use this much of the cores a shared step does not
 * claim before it keeps to one thread. */
#define OTHERS_SLACK   0.25

typedef struct ggml_threadpool * (*threadpool_new_t)(struct ggml_threadpool_params *);

static struct ggml_threadpool * new_threadpool(threadpool_new_t threadpool_new, int n_threads) {
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    tpp.poll = 0;  /* idle workers sleep instead of spinning on the Go side's cores */
    return threadpool_new(&tpp);
}

static int online_cpus(void) {
#ifdef _SC_NPROCESSORS_ONLN
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < 1 << 16 ? (int) n : 1;
#else
    return 1;
#endif
}

/* The machine's busy time so far, all cores, in seconds: /proc/stat's first
 * line (user, nice, system, irq, softirq and steal: a hypervisor's other
 * guests are busy too), read without allocating. False where there is no
 * /proc/stat. */
static bool machine_busy(double * seconds) {
#ifdef __linux__
    char buf[256];
    const int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    const ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 5 || strncmp(buf, "cpu ", 4) != 0) {
        return false;
    }
    buf[n] = '\0';
    /* cpu user nice system idle iowait irq softirq steal */
    unsigned long long v[8] = { 0 };
    char * p = buf + 4;
    for (int i = 0; i < 8; i++) {
        v[i] = strtoull(p, &p, 10);
    }
    const long tick = sysconf(_SC_CLK_TCK);
    *seconds = (double) (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double) (tick > 0 ? tick : 100);
    return true;
#else
    (void) seconds;
    return false;
#endif
}

static double process_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* How many cores other processes kept busy lately: the machine's busy time
 * less this process's CPU time, over the wall time since the last reading
 * (at least half a second ago), and the most of that and its average over
 * the last few seconds: a neighbour that works in bursts (a compiler, a
 * test run) is busy even in its pauses, which last less than a step takes
 * to collapse. This process's own threads (the Go side writing streams,
 * ggml's workers) do not count: they are what the choice is about. 0 where
 * the machine's busy time cannot be read; every core until there are two
 * readings. */
static double others_busy(thread_choice * tc) {
    const double now = now_seconds();
    if (now - tc->seen_at < 0.5) {
        return tc->others > tc->others_avg ? tc->others : tc->others_avg;
    }
    double busy;
    if (!machine_busy(&busy)) {
        return 0;
    }
    const double mine = process_seconds();
    if (tc->seen_at > 0) {
        const double others = ((busy - tc->seen_busy) - (mine - tc->seen_mine)) / (now - tc->seen_at);
        tc->others     = others > 0 ? others : 0;
        tc->others_avg = 0.8 * tc->others_avg + 0.2 * tc->others;  /* ~2.5 s at one reading per 0.5 s */
    }
    tc->seen_at   = now;
    tc->seen_busy = busy;
    tc->seen_mine = mine;
    return tc->others > tc->others_avg ? tc->others : tc->others_avg;
}

/* Give a CPU backend its two threadpools. The functions come from the
 * device's own registry entry, never from ggml-cpu.h: when a CPU module was
 * loaded, the built-in backend's functions would start the built-in
 * backend's threads, running its kernels instead of the module's. */
static bool init_threads(ngpt_model * m, ggml_backend_dev_t dev, int n_threads, char * err, size_t err_len) {
    if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        return true;
    }
    typedef void (*set_threadpool_t)(ggml_backend_t, struct ggml_threadpool *);
    typedef void (*threadpool_free_t)(struct ggml_threadpool *);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    threadpool_new_t threadpool_new = (threadpool_new_t) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    m->set_n_threads =
        (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    m->set_threadpool =
        (set_threadpool_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_cpu_set_threadpool");
    m->threadpool_free = (threadpool_free_t) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (threadpool_new == NULL || m->set_n_threads == NULL || m->set_threadpool == NULL || m->threadpool_free == NULL) {
        set_err(err, err_len, "the CPU backend %s has no threadpool functions", ggml_backend_reg_name(reg));
        return false;
    }
    m->choice = calloc(1, sizeof(*m->choice));
    if (m->choice == NULL) {
        set_oom(err, err_len);
        return false;
    }
    m->choice->probe_gap = PROBE_GAP_MIN;
    m->choice->probing   = -1;
    m->choice->n_cpus    = online_cpus();
    /* busy until measured otherwise: the first reading has nothing to
     * compare with, and a step on two threads of a busy machine stalls */
    m->choice->others    = m->choice->n_cpus;
    m->choice->others_avg = m->choice->n_cpus;
    others_busy(m->choice);
    m->n_threads = n_threads;
    m->tp_one = new_threadpool(threadpool_new, 1);
    m->tp_all = n_threads > 1 ? new_threadpool(threadpool_new, n_threads) : NULL;
    if (m->tp_one == NULL || (n_threads > 1 && m->tp_all == NULL)) {
        set_err(err, err_len, "cannot start a CPU threadpool of %d threads", n_threads);
        return false;
    }
    m->set_threadpool(m->backend, m->tp_one);
    m->set_n_threads(m->backend, 1);
    m->threads_now = 1;
    return true;
}

/* Run the next step on n threads (at most n_threads). */
static void use_threads(ngpt_model * m, int n) {
    n = n < m->n_threads ? n : m->n_threads;
    if (m->tp_one == NULL || n == m->threads_now) {
        return;
    }
    m->set_threadpool(m->backend, n > 1 ? m->tp_all : m->tp_one);
    m->set_n_threads(m->backend, n);
    m->threads_now = n;
}

/* Threads for a step: 1 unless it is shared (see layout_items) and the
 * machine has a core to spare; then the faster choice so far, or the other
 * one when it is due a try. One thread is measured first, then all. */
static int choose_threads(ngpt_model * m, bool shared) {
    thread_choice * tc = m->choice;
    if (tc == NULL) {
        return 1;
    }
    tc->probing = -1;
    if (!shared || m->n_threads < 2 || others_busy(tc) > tc->n_cpus - m->n_threads + OTHERS_SLACK) {
        return 1;
    }
    tc->n_shared++;
    int best = tc->cost[0] == 0 ? 0 : tc->cost[1] == 0 ? 1 : tc->cost[1] <= tc->cost[0] ? 1 : 0;
    if (tc->cost[0] > 0 && tc->cost[1] > 0 && tc->n_shared >= tc->next_probe) {
        best = 1 - best;
        tc->probing = best;
    }
    return best == 1 ? m->n_threads : 1;
}

/* A shared step of n_tokens took seconds on the threads choose_threads gave. */
static void record_threads(ngpt_model * m, int n_tokens, double seconds) {
    thread_choice * tc = m->choice;
    const int c = m->threads_now > 1 ? 1 : 0;
    const double cost = seconds / n_tokens;
    tc->cost[c] = tc->cost[c] == 0 ? cost : (1 - COST_WEIGHT) * tc->cost[c] + COST_WEIGHT * cost;
    if (tc->probing == c) {
        /* the other choice still wins: try it less often; it won: as often as ever */
        const bool lost = tc->cost[c] > tc->cost[1 - c];
        tc->probe_gap = lost ? (tc->probe_gap * 2 < PROBE_GAP_MAX ? tc->probe_gap * 2 : PROBE_GAP_MAX) : PROBE_GAP_MIN;
        tc->next_probe = tc->n_shared + tc->probe_gap;
    } else if (tc->next_probe == 0) {
        tc->next_probe = tc->n_shared + tc->probe_gap;
    }
}

/* Start the device's backend, and note which one it is for
 * ngpt_model_backend: which CPU variant won is what the logs must say. */
static bool init_backend(ngpt_model * m, const char * device, int n_threads, char * err, size_t err_len) {
    ggml_backend_dev_t dev = pick_device(device, err, err_len);
    if (dev == NULL) {
        return false;
    }
    m->backend = ggml_backend_dev_init(dev, NULL);
    if (m->backend == NULL) {
        set_err(err, err_len, "cannot start ggml's %s backend", ggml_backend_dev_name(dev));
        return false;
    }
    const char * module = module_of(ggml_backend_dev_backend_reg(dev));
    const char * base   = module ? strrchr(module, '/') : NULL;
    if (module) {
        snprintf(m->backend_desc, sizeof(m->backend_desc), "%s (%s)", ggml_backend_name(m->backend),
                 base ? base + 1 : module);
    } else {
        snprintf(m->backend_desc, sizeof(m->backend_desc), "%s", ggml_backend_name(m->backend));
    }
    return init_threads(m, dev, n_threads, err, err_len);
}

/* ---------------------------------------------------------------- model: load and free */

ngpt_model * ngpt_model_load(const ngpt_hparams * hp, const void * blob, size_t blob_len,
                             const ngpt_tensor_ref * refs, int n_refs, const char * device,
                             int n_threads, int64_t kv_blocks, char * err, size_t err_len) {
    if (hp == NULL || blob == NULL || refs == NULL || n_refs <= 0) {
        set_err(err, err_len, "nothing to load");
        return NULL;
    }
    if (!hparams_ok(hp, err, err_len)) {
        return NULL;
    }
    if (n_threads < 1 || n_threads > 512) {
        set_err(err, err_len, "thread count %d out of range", n_threads);
        return NULL;
    }
#ifdef __GLIBC__
    /* Graph headers and input staging grow with the batch, to a few MiB at
     * 64 streams, and are freed as they grow. glibc serves such sizes with
     * mmap only until the first is freed, then raises its threshold and
     * keeps them in the scheduler thread's arena, where every outgrown
     * buffer stays resident (11 MiB at 64 streams). A fixed threshold keeps
     * each its own mapping, returned to the OS when freed. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    const int n_specs = n_weights(hp);
    weight_spec * specs = NULL;
    const ngpt_tensor_ref ** found = NULL;

    /* Every failure below goes to fail: ngpt_model_free takes a model in any
     * state of construction. */
    ngpt_model * m = calloc(1, sizeof(*m));
    if (m == NULL) {
        set_oom(err, err_len);
        goto fail;
    }
    m->magic  = MODEL_MAGIC;
    m->hp     = *hp;
    m->layers = calloc((size_t) hp->n_layer, sizeof(ngpt_layer));
    specs     = calloc((size_t) n_specs, sizeof(*specs));
    found     = calloc((size_t) n_specs, sizeof(*found));
    if (m->layers == NULL || specs == NULL || found == NULL) {
        set_oom(err, err_len);
        goto fail;
    }
    list_weights(m, specs);
    if (!match_refs(specs, n_specs, refs, n_refs, blob_len, found, err, err_len)) {
        goto fail;
    }
    if (!init_backend(m, device, n_threads, err, err_len)) {
        goto fail;
    }
    /* panels first: whether our products run decides how the linears are stored */
    if (!init_panels(m, err, err_len) || !load_weights(m, specs, n_specs, found, blob, err, err_len) ||
        !init_kv_pool(m, kv_blocks, err, err_len)) {
        goto fail;
    }
    m->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(m->backend));
    m->graphs = new_graphs();
    if (m->galloc == NULL || m->graphs == NULL) {
        set_err(err, err_len, "cannot create the graph allocator");
        goto fail;
    }
    m->plan_gen = 1;
    free(found);
    free(specs);
    return m;

fail:
    free(found);
    free(specs);
    ngpt_model_free(m);
    return NULL;
}

int ngpt_model_free(ngpt_model * m) {
    if (m == NULL) {
        return 0;
    }
    if (!model_live(m) || m->n_seqs > 0) {
        return 1;
    }
    m->magic = 0;
    if (m->galloc) ggml_gallocr_free(m->galloc);
    if (m->kv_buf) ggml_backend_buffer_free(m->kv_buf);
    if (m->kv_ctx) ggml_free(m->kv_ctx);
    free(m->kv_used);
    free(m->kv_k);
    free(m->kv_v);
    if (m->weights_buf) ggml_backend_buffer_free(m->weights_buf);
    if (m->weights_ctx) ggml_free(m->weights_ctx);
    if (m->backend) ggml_backend_free(m->backend);
    free(m->choice);
    if (m->tp_one) m->threadpool_free(m->tp_one);
    if (m->tp_all) m->threadpool_free(m->tp_all);
    free_graphs(m);
    free(m->keys);
    free(m->stage);
    free(m->panels);
    free(m->layers);
    free(m);
    return 0;
}

const char * ngpt_model_backend(const ngpt_model * m) {
    return model_live(m) ? m->backend_desc : "";
}

/* ---------------------------------------------------------------- KV pool */

/* The keys and values of every sequence, for every layer, live in one device
 * buffer the model owns, handed out in blocks of NGPT_KV_BLOCK positions.
 * Per layer, K is [C, P], a row per position. V has the same P·C floats, and
 * a run of positions first .. first + cap − 1 owns the same span of them as
 * in K, laid out [cap, C]: transposed (positions fastest), so that probs · v
 * reads a sequence's values as they lie, in rows cap apart. Transposed
 * within the run rather than across the whole pool, so a sequence's values
 * stay on its own pages: rows a pool apart put every row on a page of its
 * own (a TLB miss per row in every decode step) and, with transparent huge
 * pages, made the first sequence fault in the whole V pool.
 *
 * A sequence takes all its blocks when it starts, as one run of adjacent
 * blocks, first fit from the lowest. Adjacent, because its keys and values
 * are then plain views of the pool that ggml's matmuls read in place; with
 * scattered blocks each step would first gather every sequence's cache into
 * one tensor, copying as much data again as attention reads. Lowest first,
 * because a page of the pool only becomes resident when first written: the
 * pool's resident size follows the most blocks ever in use at once, and a
 * freed block is reused rather than returned to the OS and faulted in again. */

/* Bytes of one cached key or value. */
static size_t kv_size(const ngpt_hparams * hp) {
    return hp->kv_type == NGPT_KV_F16 ? sizeof(ggml_fp16_t) : sizeof(float);
}

size_t ngpt_kv_block_bytes(const ngpt_hparams * hp) {
    if (hp == NULL || !hparams_ok(hp, NULL, 0)) {
        return 0;
    }
    /* K and V, every layer */
    return (size_t) NGPT_KV_BLOCK * 2 * (size_t) hp->n_layer * (size_t) hp->n_embd * kv_size(hp);
}

static bool init_kv_pool(ngpt_model * m, int64_t n_blocks, char * err, size_t err_len) {
    const int L = m->hp.n_layer, C = m->hp.n_embd;
    const int64_t window = (m->hp.n_ctx + NGPT_KV_BLOCK - 1) / NGPT_KV_BLOCK;
    /* values are addressed one float at a time by int32 row indices (ggml_set_rows) */
    const int64_t most = INT32_MAX / ((int64_t) NGPT_KV_BLOCK * C);
    if (n_blocks < window || n_blocks > most) {
        set_err(err, err_len, "a KV pool of %lld blocks is out of range [%lld, %lld] (one window of %d positions)",
                (long long) n_blocks, (long long) window, (long long) most, m->hp.n_ctx);
        return false;
    }
    const int64_t P = n_blocks * NGPT_KV_BLOCK;
    m->kv_used = calloc((size_t) n_blocks, 1);
    m->kv_k    = calloc((size_t) L, sizeof(*m->kv_k));
    m->kv_v    = calloc((size_t) L, sizeof(*m->kv_v));
    struct ggml_init_params ip = {
        .mem_size   = ggml_tensor_overhead() * (size_t) (2 * L),
        .mem_buffer = NULL,
        .no_alloc   = true,
    };
    m->kv_ctx = (m->kv_used && m->kv_k && m->kv_v) ? ggml_init(ip) : NULL;
    if (m->kv_ctx == NULL) {
        set_oom(err, err_len);
        return false;
    }
    const enum ggml_type type = m->hp.kv_type == NGPT_KV_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    for (int l = 0; l < L; l++) {
        m->kv_k[l] = ggml_new_tensor_2d(m->kv_ctx, type, C, P);
        m->kv_v[l] = ggml_new_tensor_1d(m->kv_ctx, type, P * C);
    }
    m->kv_buf = ggml_backend_alloc_ctx_tensors(m->kv_ctx, m->backend);
    if (m->kv_buf == NULL) {
        set_err(err, err_len, "cannot allocate a KV pool of %lld blocks (%.0f MiB)", (long long) n_blocks,
                (double) n_blocks * (double) ngpt_kv_block_bytes(&m->hp) / (1 << 20));
        return false;
    }
    m->kv_blocks = n_blocks;
    m->kv_free   = n_blocks;
    return true;
}

void ngpt_kv_stats_get(const ngpt_model * m, ngpt_kv_stats * st) {
    if (st == NULL) {
        return;
    }
    const bool live = model_live(m);
    st->blocks      = live ? m->kv_blocks : 0;
    st->free_blocks = live ? m->kv_free : 0;
}

/* The first block of a run of n free ones, lowest first, or −1. */
static int64_t find_free_run(const ngpt_model * m, int n) {
    int64_t run = 0;
    for (int64_t b = 0; b < m->kv_blocks; b++) {
        run = m->kv_used[b] ? 0 : run + 1;
        if (run == n) {
            return b - n + 1;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- sequences */

int ngpt_seq_new(ngpt_model * m, int capacity, ngpt_seq ** out, char * err, size_t err_len) {
    if (out == NULL) {
        set_err(err, err_len, "nowhere to put the sequence");
        return NGPT_ERROR;
    }
    *out = NULL;
    if (!model_live(m)) {
        set_err(err, err_len, "not a live model");
        return NGPT_ERROR;
    }
    if (capacity < 1 || capacity > m->hp.n_ctx) {
        set_err(err, err_len, "sequence capacity %d out of range [1, %d]", capacity, m->hp.n_ctx);
        return NGPT_ERROR;
    }
    const int n = (capacity + NGPT_KV_BLOCK - 1) / NGPT_KV_BLOCK;
    const int64_t first = n <= m->kv_free ? find_free_run(m, n) : -1;
    if (first < 0) {
        set_err(err, err_len, "the KV pool has no run of %d free blocks (%lld of %lld free)", n,
                (long long) m->kv_free, (long long) m->kv_blocks);
        return NGPT_KV_FULL;
    }
    ngpt_seq * s = calloc(1, sizeof(*s));
    if (s == NULL) {
        set_oom(err, err_len);
        return NGPT_ERROR;
    }
    s->magic       = SEQ_MAGIC;
    s->model       = m;
    s->first_block = first;
    s->n_blocks    = n;
    s->first       = first * NGPT_KV_BLOCK;
    s->capacity    = n * NGPT_KV_BLOCK;
    s->positions   = capacity;
    memset(m->kv_used + first, 1, (size_t) n);
    m->kv_free -= n;
    m->n_seqs++;
    *out = s;
    return NGPT_OK;
}

int ngpt_seq_free(ngpt_seq * s) {
    if (s == NULL) {
        return 0;
    }
    if (!seq_live(s)) {
        return 1;
    }
    s->magic = 0;
    memset(s->model->kv_used + s->first_block, 0, (size_t) s->n_blocks);
    s->model->kv_free += s->n_blocks;
    s->model->n_seqs--;
    free(s);
    return 0;
}

/* ---------------------------------------------------------------- step: items */

/* A list of n distinct layers with a buffer for their outputs. */
static bool layers_ok(const ngpt_hparams * hp, int n, const int32_t * layers, const float * out, int i,
                      const char * what, char * err, size_t err_len) {
    if (n == 0) {
        return true;
    }
    if (n < 0 || n > hp->n_layer || layers == NULL || out == NULL) {
        set_err(err, err_len, "item %d: bad %s layers: %d of them, list %s, buffer %s", i, what, n,
                layers ? "given" : "NULL", out ? "given" : "NULL");
        return false;
    }
    for (int k = 0; k < n; k++) {
        if (layers[k] < 0 || layers[k] >= hp->n_layer) {
            set_err(err, err_len, "item %d: %s layer %d out of range [0, %d)", i, what, layers[k], hp->n_layer);
            return false;
        }
        for (int j = 0; j < k; j++) {
            if (layers[j] == layers[k]) {
                set_err(err, err_len, "item %d: %s layer %d listed twice", i, what, layers[k]);
                return false;
            }
        }
    }
    return true;
}

static bool items_ok(const ngpt_model * m, const ngpt_item * items, int n_items, char * err, size_t err_len) {
    const ngpt_hparams * hp = &m->hp;
    for (int i = 0; i < n_items; i++) {
        const ngpt_item * it = &items[i];
        if (!seq_live(it->seq) || it->seq->model != m) {
            set_err(err, err_len, "item %d: not a live sequence of this model", i);
            return false;
        }
        if (it->tokens == NULL || it->n_tokens < 1) {
            set_err(err, err_len, "item %d: no tokens", i);
            return false;
        }
        /* n_past + n_tokens could overflow: compare against what is left */
        const int cap = it->seq->positions;
        if (it->n_past < 0 || it->n_past > cap || it->n_tokens > cap - it->n_past) {
            set_err(err, err_len, "item %d: positions %d..%lld exceed the cache of %d", i, it->n_past,
                    (long long) it->n_past + it->n_tokens, cap);
            return false;
        }
        for (int j = 0; j < it->n_tokens; j++) {
            if (it->tokens[j] < 0 || it->tokens[j] >= hp->n_vocab) {
                set_err(err, err_len, "item %d: token %d out of range", i, it->tokens[j]);
                return false;
            }
        }
        if (!layers_ok(hp, it->n_trace, it->trace_layers, it->attn_rows, i, "traced", err, err_len) ||
            !layers_ok(hp, it->n_full, it->full_layers, it->full_attn, i, "full-attention", err, err_len)) {
            return false;
        }
        if (it->lens != NULL && it->logits == NULL && it->all_logits == NULL) {
            set_err(err, err_len, "item %d: the logit lens needs logits or all_logits", i);
            return false;
        }
        for (int j = 0; it->head_mask != NULL && j < hp->n_layer * hp->n_head; j++) {
            if (it->head_mask[j] != 0.0f && it->head_mask[j] != 1.0f) {
                set_err(err, err_len, "item %d: head mask entry %d is not 0 or 1", i, j);
                return false;
            }
        }
        for (int j = 0; j < i; j++) {
            if (items[j].seq == it->seq) {
                set_err(err, err_len, "item %d: sequence appears twice in one step", i);
                return false;
            }
        }
    }
    return true;
}

/* ---------------------------------------------------------------- step: shape */

/* Attention reads keys in runs of ATTN_PAD positions and masks the tail:
 * ggml's fast matrix kernels (llamafile's sgemm) want lengths that are
 * multiples of 16, and a graph whose lengths change only every ATTN_PAD
 * tokens can be reused until they do. */
#define ATTN_PAD 32

/* What a step's graph depends on, per item. Everything else (token ids,
 * positions, cache rows, the causal mask) is input data, so two steps with
 * equal keys run the same graph. */
typedef struct item_key {
    int64_t  first;        /* where the sequence's cache starts in the pool (ngpt_seq.first) */
    int32_t  cap;          /* and how many positions it holds (ngpt_seq.capacity) */
    int32_t  n_tokens;     /* n */
    int32_t  t_pad;        /* keys read: t = n_past + n rounded up to ATTN_PAD, within the cache */
    int32_t  logits;       /* LOGITS_NONE, LOGITS_LAST or LOGITS_ALL */
    /* 1 when the item reads attention of any layer. Every layer's
     * probabilities are then outputs, so which layers a stream traces is
     * read-back data and never a new graph: a client that changes its
     * layers between requests reuses the graphs kept. */
    int32_t  probs;
    int32_t  lens;         /* 1 when the item wants the logit lens */
    int32_t  masked;       /* 1 when a head mask multiplies its heads' outputs; the mask is an input */
    int32_t  unused;       /* keeps the struct free of padding, so memcmp compares keys */
} item_key;

enum { LOGITS_NONE, LOGITS_LAST, LOGITS_ALL };

static int round_up(int n, int step) {
    return (n + step - 1) / step * step;
}

static void make_key(const ngpt_item * it, item_key * k) {
    const int t = it->n_past + it->n_tokens;
    memset(k, 0, sizeof(*k));
    k->first    = it->seq->first;
    k->cap      = it->seq->capacity;
    k->n_tokens = it->n_tokens;
    k->t_pad    = round_up(t, ATTN_PAD) < it->seq->capacity ? round_up(t, ATTN_PAD) : it->seq->capacity;
    k->logits   = it->all_logits ? LOGITS_ALL : it->logits ? LOGITS_LAST : LOGITS_NONE;
    k->probs    = it->n_trace > 0 || it->n_full > 0;
    k->lens     = it->lens != NULL;
    k->masked   = it->head_mask != NULL;
}

/* Where one item's tensors sit inside the step's graph. */
typedef struct item_slot {
    int                   first;      /* index of its first token among the N */
    int                   mask_off;   /* its [t_pad, n] mask's first float in inp_mask */
    int                   logit_row;  /* its first column of the logits (1 or n of them), or -1 */
    int                   lens_col;   /* its column in each layer's block of lens, or -1 */
    int                   heads_off;  /* its [H, L] head mask's first float in inp_heads, or -1 */
    int                   dec_col;    /* a decode (one token): its column among the step's decodes, else -1 */
    int                   probs_at;   /* a decode with key.probs: where its probabilities start, in floats
                                       * after the decodes' outputs in decode_attn's result; else -1 */
    struct ggml_tensor ** probs;      /* [L] of [t_pad, n, H] probabilities when key.probs, else NULL */
} item_slot;

/* What decode_attn_op reads for one layer: the graph's items, and which. */
typedef struct decode_attn {
    const struct step_graph * sg;
    const struct ngpt_model * m;
    int                       il;
} decode_attn;

/* One step's graph with the tensors around it: inputs to upload, outputs to
 * read after compute. Its structure depends only on the items' keys, so it
 * is kept and run again for every later step with the same keys. */
typedef struct step_graph {
    int                   cap_items;   /* room in keys, slots and parts */
    void                * meta;        /* this graph's tensor headers */
    size_t                meta_size;
    uint64_t              plan;        /* the model's plan_gen its memory plan belongs to; 0: none */
    uint64_t              used;        /* the step that last ran it */

    int                   n_items;
    item_key            * keys;        /* [n_items] */
    item_slot           * slots;       /* [n_items] */
    struct ggml_tensor ** parts;       /* [n_items] scratch: one layer's per-item attention */
    struct ggml_tensor ** probs;       /* [n_items · L] where slots' probs point */
    struct ggml_tensor ** lens_parts;  /* [L] scratch: each layer's lens rows */
    decode_attn         * attn_ops;    /* [L] each layer's decode_attn_op arguments */
    int                 * dec_items;   /* [n_dec] the decodes' item indices */
    int                   n_dec;       /* items of one token (decodes) */
    int                   n_dec_probs; /* floats of the decodes' probabilities (key.probs) */
    struct ggml_context * ctx;         /* tensor headers, in meta */
    struct ggml_cgraph  * gf;
    int                   N;           /* tokens in the step, all items */
    int                   n_logits;    /* rows of logits: 1 per item that wants the last, n per one that wants all */
    int                   n_mask;      /* floats of all items' masks */
    int                   n_lens;      /* items that want the lens */
    int                   n_heads;     /* floats of all items' head masks */
    int                   threads;     /* how many threads to run it on, see layout_items */
    struct ggml_tensor  * inp_tokens;  /* [N] token ids */
    struct ggml_tensor  * inp_pos;     /* [N] positions */
    struct ggml_tensor  * inp_rows;    /* [N] the pool row each new token's k goes to */
    struct ggml_tensor  * inp_vrows;   /* [C·N] the pool float each new token's v goes to, per channel */
    struct ggml_tensor  * inp_last;    /* [n_logits] rows that give logits; NULL when all or none do */
    struct ggml_tensor  * inp_mask;    /* [n_mask] each item's causal mask, 0 or −inf */
    struct ggml_tensor  * inp_lens;    /* [n_lens] the last row of each item that wants the lens */
    struct ggml_tensor  * inp_heads;   /* [n_heads] the head masks, 1 or 0 */
    struct ggml_tensor  * logits;      /* [V, n_logits]; NULL when no item wants them */
    struct ggml_tensor  * lens;        /* [V, n_lens · (L − 1)]: layer l's rows at l · n_lens; NULL if none */
} step_graph;

/* ---------------------------------------------------------------- step: matrix products of many tokens */

/* ggml's F32 product for many tokens (llamafile's tinyBLAS) keeps, for each
 * output, a vector of partial sums along the reduction and adds it up at
 * the end; with this model's short reductions (64 to 1,024) that sum and
 * its loads cost as much as the multiplications, and it ran at a third of
 * this machine's FMA peak. panel_mul_mat computes the same products the
 * other way round: a panel of PANEL_COLS tokens is copied transposed, so
 * that one vector holds one input feature of every token in the panel,
 * and each weight is broadcast against it. Every output is then one plain
 * chain of fused multiply-adds in the order of the reduction, with no
 * horizontal sums (measured 2-3× ggml's speed on the window's shapes).
 * It serves the attention of prompt chunks and windows (scores and
 * probs · v, products of activations); the linear layers, whose weights
 * are known at load, go through wt_mul_mat, and decodes' attention through
 * decode_attn_op. All of these run only on CPUs with AVX-512, where they
 * were measured (elsewhere 16-float vectors would be emulated and spill),
 * and are compiled for them whatever the build targets: a portable binary
 * (the Docker image's) gets them on such a CPU too, checked when the model
 * loads. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PANEL_PRODUCT 1
#define PANEL_TARGET __attribute__((target("avx512f,fma")))
#else
#define PANEL_PRODUCT 0
#define PANEL_TARGET
#endif

typedef float vec16 __attribute__((vector_size(64)));

enum {
    PANEL_LANES = 16,                 /* floats per vector */
    PANEL_COLS  = 2 * PANEL_LANES,    /* tokens per panel: two vectors */
    PANEL_ROWS  = 8,                  /* weight rows per tile: 16 accumulators */
    PANEL_MIN_TOKENS = 32,            /* fewer: ggml's product, which wastes no padding */
};

/* Room for every thread's panel; also where the CPU path is switched on. */
static bool init_panels(ngpt_model * m, char * err, size_t err_len) {
#if PANEL_PRODUCT
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f");
#else
    const bool avx512 = false;
#endif
    /* NIELSGPT_GGML_KERNELS=1 keeps ggml's ops for everything, as on CPUs
     * without AVX-512 (an ARM Mac's CPU, older x86): so that `make test`
     * checks that path against PyTorch on a machine that has AVX-512. */
    const char * ggml_only = getenv("NIELSGPT_GGML_KERNELS");
    if (!avx512 || m->tp_one == NULL || (ggml_only != NULL && strcmp(ggml_only, "1") == 0)) {
        return true;
    }
    const ngpt_hparams * hp = &m->hp;
    int k = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
    k = k > hp->n_ctx ? k : hp->n_ctx;
    m->panels = aligned_alloc(64, (size_t) m->n_threads * PANEL_COLS * (size_t) k * sizeof(float));
    if (m->panels == NULL) {
        set_oom(err, err_len);
        return false;
    }
    m->panel_k = k;
    return true;
}

/* rows outputs of tokens in the panel: out[r · PANEL_COLS + j] =
 * Σ_k w[r · w_row + k] · panel[k · PANEL_COLS + j]. Inlined with a constant
 * rows, the accumulators stay in registers. */
static inline __attribute__((always_inline)) PANEL_TARGET void panel_tile(const float * w, size_t w_row, const float * panel,
                                                              int K, int rows, float * out) {
    vec16 lo[PANEL_ROWS], hi[PANEL_ROWS];
    for (int r = 0; r < PANEL_ROWS; r++) {
        lo[r] = (vec16){ 0 };
        hi[r] = (vec16){ 0 };
    }
    for (int k = 0; k < K; k++) {
        const vec16 x0 = *(const vec16 *) (panel + (size_t) k * PANEL_COLS);
        const vec16 x1 = *(const vec16 *) (panel + (size_t) k * PANEL_COLS + PANEL_LANES);
        for (int r = 0; r < rows; r++) {
            /* w − 0 broadcasts w (0 + w would not: it turns −0 into +0, so
             * the compiler keeps an add), folded into the FMA's operand */
            const vec16 b = w[(size_t) r * w_row + k] - (vec16){ 0 };
            lo[r] += b * x0;   /* contracted to one FMA: -ffp-contract=fast is gcc's default */
            hi[r] += b * x1;
        }
    }
    for (int r = 0; r < rows; r++) {
        *(vec16 *) (out + (size_t) r * PANEL_COLS)               = lo[r];
        *(vec16 *) (out + (size_t) r * PANEL_COLS + PANEL_LANES) = hi[r];
    }
}

/* dst = ggml_mul_mat(w, x) for F32 w: [K, M, B], x: [K, N, B] with
 * contiguous rows; dst: [M, N, B] contiguous. Thread ith of nth takes every
 * nth tile of PANEL_ROWS weight rows, packing each panel it needs itself. */
static PANEL_TARGET void panel_mul_mat(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ngpt_model * m = userdata;
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * x = dst->src[1];
    const int K = (int) w->ne[0], M = (int) w->ne[1], N = (int) x->ne[1], B = (int) x->ne[2];
    const size_t w_row = w->nb[1] / sizeof(float), x_row = x->nb[1] / sizeof(float);
    float * panel = m->panels + (size_t) ith * PANEL_COLS * (size_t) m->panel_k;
    const int tiles = (M + PANEL_ROWS - 1) / PANEL_ROWS;
    float out[PANEL_ROWS * PANEL_COLS] __attribute__((aligned(64)));

    for (int b = 0; b < B; b++) {
        const float * wb = (const float *) ((const char *) w->data + (size_t) b * w->nb[2]);
        const float * xb = (const float *) ((const char *) x->data + (size_t) b * x->nb[2]);
        float       * db = (float *) ((char *) dst->data + (size_t) b * dst->nb[2]);
        for (int n0 = 0; n0 < N; n0 += PANEL_COLS) {
            const int cols = N - n0 < PANEL_COLS ? N - n0 : PANEL_COLS;
            if (ith >= tiles) {
                break;
            }
            for (int j = 0; j < PANEL_COLS; j++) {
                const float * xj = xb + (size_t) (n0 + j) * x_row;
                for (int k = 0; k < K; k++) {
                    panel[(size_t) k * PANEL_COLS + j] = j < cols ? xj[k] : 0.0f;
                }
            }
            for (int t = ith; t < tiles; t += nth) {
                const int m0 = t * PANEL_ROWS, rows = M - m0 < PANEL_ROWS ? M - m0 : PANEL_ROWS;
                if (rows == PANEL_ROWS) {
                    panel_tile(wb + (size_t) m0 * w_row, w_row, panel, K, PANEL_ROWS, out);
                } else {
                    panel_tile(wb + (size_t) m0 * w_row, w_row, panel, K, rows, out);
                }
                for (int j = 0; j < cols; j++) {
                    float * d = db + (size_t) (n0 + j) * (dst->nb[1] / sizeof(float)) + m0;
                    for (int r = 0; r < rows; r++) {
                        d[r] = out[r * PANEL_COLS + j];
                    }
                }
            }
        }
    }
}

/* Whether ggml_mul_mat(w, x) can go through panel_mul_mat: the CPU, F32,
 * a reduction a panel holds, n tokens (x's rows) enough to fill panels. */
static bool panel_fits(const ngpt_model * m, const struct ggml_tensor * w, const struct ggml_tensor * x, int64_t n) {
    return m->panels != NULL && w->type == GGML_TYPE_F32 && x->type == GGML_TYPE_F32 && n >= PANEL_MIN_TOKENS &&
           w->ne[0] <= m->panel_k && w->ne[3] == 1 && x->ne[3] == 1 && w->ne[2] == x->ne[2] &&
           w->nb[0] == sizeof(float) && x->nb[0] == sizeof(float);
}

/* ggml_mul_mat(w, x) = x @ w.T per batch, for one item's attention:
 * which kernel runs depends on that item alone. */
static struct ggml_tensor * mul_mat(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * w,
                                    struct ggml_tensor * x) {
    if (!panel_fits(m, w, x, x->ne[1])) {
        return ggml_mul_mat(ctx, w, x);
    }
    struct ggml_tensor * args[2] = { w, x };
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], 1, args, 2, panel_mul_mat,
                          GGML_N_TASKS_MAX, (void *) m);
}

/* ---------------------------------------------------------------- step: GELU */

/* e^x for x ≤ 0, in a form the compiler vectorises: x = k·ln 2 + r with
 * |r| ≤ ln 2 / 2 (ln 2 split in two so that k·ln 2 is exact), e^r by its
 * Taylor series to r⁷ (error below 6e-9), 2^k by building the exponent.
 * Below −87 it returns e^−87 rather than a subnormal. */
static inline PANEL_TARGET float exp_nonpositive(float x) {
    x = x > -87.0f ? x : -87.0f;
    const float k = rintf(x * 1.44269504088896341f);                              /* x / ln 2 */
    const float r = fmaf(k, -1.42860676533018690e-06f, fmaf(k, -0.693145751953125f, x));
    float p = 1.0f / 5040;
    p = fmaf(p, r, 1.0f / 720);
    p = fmaf(p, r, 1.0f / 120);
    p = fmaf(p, r, 1.0f / 24);
    p = fmaf(p, r, 1.0f / 6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const int32_t bits = ((int32_t) k + 127) << 23;                                /* 2^k, k ≥ −126 */
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

/* y = F.gelu(x, approximate="none") = x/2 · (1 + erf(x/√2)) over n floats.
 * ggml's exact GELU calls libm's erff once per float, a tenth of a prompt's
 * time; this loop vectorises. erfc(z) for z = |x|/√2 ≥ 0 is Abramowitz and
 * Stegun's 7.1.26, t·(a1 + t·(a2 + …))·e^(−z²) with t = 1/(1 + p·z), whose
 * error is at most 1.5e-7; so GELU's error is at most 1.5e-7 · |x|/2, as
 * close to the exact value as float evaluation of erff's formula (3.3e-7
 * against 2.7-4.5e-7 over [−4, 4], measured against double erf). For
 * x ≥ 0, x/2 · (2 − erfc); for x < 0, x/2 · erfc, so neither tail cancels. */
static PANEL_TARGET void gelu_floats(int64_t n, float * restrict y, const float * restrict x) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const float z = fabsf(v) * 0.70710678118654752f;
        const float t = 1.0f / fmaf(0.3275911f, z, 1.0f);
        float p = 1.061405429f;
        p = fmaf(p, t, -1.453152027f);
        p = fmaf(p, t, 1.421413741f);
        p = fmaf(p, t, -0.284496736f);
        p = fmaf(p, t, 0.254829592f);
        const float erfc = p * t * exp_nonpositive(-z * z);
        const float h = 0.5f * v * erfc;
        y[i] = v >= 0.0f ? v - h : h;
    }
}

/* dst = gelu(src[0]), contiguous [F, n]: thread ith of nth takes a share of
 * the rows. */
static PANEL_TARGET void gelu_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    const struct ggml_tensor * x = dst->src[0];
    const int64_t F = x->ne[0], rows = ggml_nrows(x);
    const int64_t per = (rows + nth - 1) / nth, r0 = per * ith, r1 = r0 + per < rows ? r0 + per : rows;
    if (r0 < r1) {
        gelu_floats((r1 - r0) * F, (float *) dst->data + r0 * F, (const float *) x->data + r0 * F);
    }
}

/* The exact (erf) GELU of x, [F, n]: our vectorised loop where our
 * products run (compiled for the same CPUs: without hardware FMA, fmaf is a
 * slow library call), ggml's elsewhere. The same loop for every step size,
 * so a stream's activations do not depend on what it is batched with. */
static struct ggml_tensor * gelu(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * x) {
    if (m->panels == NULL || x->type != GGML_TYPE_F32 || !ggml_is_contiguous(x)) {
        return ggml_gelu_erf(ctx, x);
    }
    return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], &x, 1, gelu_op,
                          GGML_N_TASKS_MAX, NULL);
}

/* ---------------------------------------------------------------- step: decode attention */

/* A decode (an item of one token) attends with one query per head. Through
 * ggml that is a product, a softmax and another product per item and layer,
 * and a join of the items' outputs: at 16 streams some 60 operations a
 * layer, each ending at the workers' barrier, so two threads barely beat
 * one. decode_attn_op does every decode of a layer in one operation, its
 * threads taking (item, head) pairs in turn. Each pair is computed by one
 * thread in a fixed order, so an item's result does not depend on what
 * else is in the step or on the threads. Same maths as build_attn_item:
 * probs = softmax(q · kᵀ / √D + mask), out = probs · v (× keep when the
 * item has a head mask). It reads keys only up to the last one the mask
 * shows, not the padding. Where our products run (AVX-512), with heads a
 * multiple of 16 wide. */
#if PANEL_PRODUCT
#include <immintrin.h>

/* Lane i of the result is the sum of a[i]'s 16 lanes, by a fixed tree of
 * adds: 16 dot products reduced at the cost of about two of the usual
 * horizontal sums. */
static inline __attribute__((always_inline)) PANEL_TARGET __m512 sum_lanes16(const __m512 a[16]) {
    __m512 b[8], c[4];
    for (int k = 0; k < 8; k++) {   /* per 128-bit lane: a[2k] and a[2k+1], pairs of floats summed */
        b[k] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * k], a[2 * k + 1]), _mm512_unpackhi_ps(a[2 * k], a[2 * k + 1]));
    }
    for (int k = 0; k < 4; k++) {   /* per 128-bit lane: a[4k .. 4k+3], that lane's sums */
        c[k] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * k], b[2 * k + 1], 0x44), _mm512_shuffle_ps(b[2 * k], b[2 * k + 1], 0xEE));
    }
    const __m512 d0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
    const __m512 d1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88), _mm512_shuffle_f32x4(c[2], c[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, 0x88), _mm512_shuffle_f32x4(d0, d1, 0xDD));
}

/* exp_nonpositive, 16 at a time. */
static inline __attribute__((always_inline)) PANEL_TARGET __m512 exp_nonpositive16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-1.42860676533018690e-06f),
                                     _mm512_fmadd_ps(k, _mm512_set1_ps(-0.693145751953125f), x));
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

/* 16 cached keys or values from p, F16 or F32. */
static inline __attribute__((always_inline)) PANEL_TARGET __m512 load16(const char * p, bool half) {
    return half ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p)) : _mm512_loadu_ps((const float *) p);
}

/* The lanes of a block of 16 from j that lie below n. */
static inline __mmask16 lanes_below(int j, int n) {
    return n - j >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - j)) - 1);
}

static PANEL_TARGET void decode_attn_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const decode_attn * da = userdata;
    const step_graph  * sg = da->sg;
    const ngpt_model  * m  = da->m;
    const struct ggml_tensor * q = dst->src[0], * kp = dst->src[1], * vp = dst->src[2], * mask = dst->src[3];
    const struct ggml_tensor * heads = dst->src[4];   /* NULL when no item has a head mask */
    const int C = m->hp.n_embd, H = m->hp.n_head, D = C / H;
    const bool half = kp->type == GGML_TYPE_F16;
    const size_t es = ggml_element_size(kp);
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float) D));
    const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
    float * out     = (float *) dst->data;
    float * scratch = m->panels + (size_t) ith * PANEL_COLS * (size_t) m->panel_k;  /* n_ctx ≤ panel_k floats */
    __m512 acc[16];

    for (int u = ith; u < sg->n_dec * H; u += nth) {
        const int i = sg->dec_items[u / H], h = u % H;
        const item_key  * key = &sg->keys[i];
        const item_slot * s   = &sg->slots[i];
        const float * qh = (const float *) ((const char *) q->data + (size_t) s->first * q->nb[2] + (size_t) h * q->nb[1]);
        const float * mk = (const float *) mask->data + s->mask_off;
        const char  * k0 = (const char *) kp->data + (size_t) key->first * kp->nb[1] + (size_t) h * D * es;
        /* V of the run is [cap, C]: channel c's positions are a row cap long */
        const char  * v0 = (const char *) vp->data + ((size_t) key->first * C + (size_t) h * D * key->cap) * es;
        float * p = key->probs ? out + (size_t) C * sg->n_dec + s->probs_at + (size_t) h * key->t_pad : scratch;

        int n = 0;   /* keys up to the last one the mask shows */
        for (int j = 0; j < key->t_pad; j++) {
            n = mk[j] == -INFINITY ? n : j + 1;
        }

        /* scores = q · kᵀ / √D + mask, 16 keys at a time (the last block
         * short: its missing keys score 0 and are not stored); their max.
         * The 16 sums are independent chains, kept in registers. */
        __m512 mx = minus_inf;
        for (int j = 0; j < n; j += 16) {
            const __mmask16 live = lanes_below(j, n);
            const int rows = n - j < 16 ? n - j : 16;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                acc[r] = _mm512_setzero_ps();
            }
            for (int d = 0; d < D; d += 16) {
                const __m512 qd = _mm512_loadu_ps(qh + d);
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++) {
                    if (r < rows) {
                        const char * kj = k0 + (size_t) (j + r) * kp->nb[1] + (size_t) d * es;
                        acc[r] = _mm512_fmadd_ps(qd, load16(kj, half), acc[r]);
                    }
                }
            }
            const __m512 sc = _mm512_add_ps(_mm512_mul_ps(sum_lanes16(acc), scale), _mm512_maskz_loadu_ps(live, mk + j));
            _mm512_mask_storeu_ps(p + j, live, sc);
            mx = _mm512_mask_max_ps(mx, live, mx, sc);
        }
        /* probs = softmax: e^(s − max) (masked keys exactly 0), over their sum */
        const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < n; j += 16) {
            const __mmask16 live = lanes_below(j, n);
            const __m512 sc = _mm512_maskz_loadu_ps(live, p + j);
            const __mmask16 shown = _mm512_mask_cmp_ps_mask(live, sc, minus_inf, _CMP_NEQ_OQ);
            const __m512 e = _mm512_maskz_mov_ps(shown, exp_nonpositive16(_mm512_sub_ps(sc, top)));
            _mm512_mask_storeu_ps(p + j, live, e);
            sum = _mm512_add_ps(sum, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (int j = 0; j < n; j += 16) {
            const __mmask16 live = lanes_below(j, n);
            _mm512_mask_storeu_ps(p + j, live, _mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + j), inv));
        }
        for (int j = n; j < key->t_pad && key->probs; j++) {
            p[j] = 0.0f;   /* masked keys: exactly 0, as ggml's softmax gives them */
        }

        /* out = probs · v, 16 channels at a time (× keep under a head mask) */
        const __m512 keep = _mm512_set1_ps(key->masked ? ((const float *) heads->data)[s->heads_off + da->il * H + h] : 1.0f);
        float * o = out + (size_t) s->dec_col * C + (size_t) h * D;
        for (int d0 = 0; d0 < D; d0 += 16) {
            const char * vd = v0 + (size_t) d0 * key->cap * es;
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                acc[r] = _mm512_setzero_ps();
            }
            for (int j = 0; j < n; j += 16) {
                const __mmask16 live = lanes_below(j, n);
                const __m512 pj = _mm512_maskz_loadu_ps(live, p + j);
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++) {
                    /* the 16 values from j lie in the run (cap is a multiple of
                     * 16 at least n); lanes from n are zeroed */
                    const __m512 vj = _mm512_maskz_mov_ps(live, load16(vd + ((size_t) r * key->cap + j) * es, half));
                    acc[r] = _mm512_fmadd_ps(pj, vj, acc[r]);
                }
            }
            _mm512_storeu_ps(o + d0, _mm512_mul_ps(sum_lanes16(acc), keep));
        }
    }
}
#endif

/* Whether this step's decodes go through decode_attn_op. */
static bool decode_attn_fits(const step_graph * sg, const ngpt_model * m) {
    const int D = m->hp.n_embd / m->hp.n_head;
    return PANEL_PRODUCT && m->panels != NULL && sg->n_dec > 0 && D % 16 == 0 && m->panel_k >= m->hp.n_ctx;
}

/* Every decode's attention in layer il: [C · n_dec + n_dec_probs], the
 * decodes' outputs ([C, n_dec], heads side by side) and then the
 * probabilities of those with key.probs ([t_pad, 1, H] each), which the
 * slots' probs view. q: [D, H, N] after rotary; kp, vp: the pool as
 * written this step. */
static struct ggml_tensor * build_decode_attn(step_graph * sg, const ngpt_model * m, int il, struct ggml_tensor * q,
                                              struct ggml_tensor * kp, struct ggml_tensor * vp) {
#if PANEL_PRODUCT
    struct ggml_context * ctx = sg->ctx;
    const int C = m->hp.n_embd, H = m->hp.n_head;
    decode_attn * da = &sg->attn_ops[il];
    da->sg = sg;
    da->m  = m;
    da->il = il;
    struct ggml_tensor * args[5] = { q, kp, vp, sg->inp_mask, sg->inp_heads };
    struct ggml_tensor * dec = ggml_custom_4d(ctx, GGML_TYPE_F32, (int64_t) C * sg->n_dec + sg->n_dec_probs, 1, 1, 1,
                                              args, sg->inp_heads ? 5 : 4, decode_attn_op, GGML_N_TASKS_MAX, da);
    if (sg->n_dec_probs > 0) {
        ggml_set_output(dec);   /* the views below are read after compute: never scratch */
    }
    for (int d = 0; d < sg->n_dec; d++) {
        const item_key * key = &sg->keys[sg->dec_items[d]];
        item_slot      * s   = &sg->slots[sg->dec_items[d]];
        if (key->probs) {
            const size_t row = (size_t) key->t_pad * sizeof(float);
            s->probs[il] = ggml_view_3d(ctx, dec, key->t_pad, 1, H, row, row,
                                        ((size_t) C * sg->n_dec + s->probs_at) * sizeof(float));  /* [t_pad, 1, H] */
            ggml_set_output(s->probs[il]);
        }
    }
    return dec;
#else
    (void) sg; (void) m; (void) il; (void) q; (void) kp; (void) vp;
    return NULL;
#endif
}

/* ---------------------------------------------------------------- step: graph */

/* ggml_rope_ext also carries position interpolation and YaRN context
 * extension; the reference model has neither, so these values switch both
 * off, leaving plain rotary: angle = pos · theta^(−2i/D). */
#define ROPE_MODE_ADJACENT_PAIRS GGML_ROPE_TYPE_NORMAL  /* pairs (2i, 2i+1) as apply_rotary; NEOX pairs i, i+D/2 */
static const float ROPE_FREQ_SCALE  = 1.0f;   /* positions not interpolated */
static const float ROPE_EXT_FACTOR  = 0.0f;   /* no YaRN mix, so n_ctx_orig and the betas go unread */
static const float ROPE_ATTN_FACTOR = 1.0f;   /* cos and sin not rescaled */
static const float ROPE_BETA_FAST   = 32.0f;  /* YaRN ramp bounds: ggml's usual values, unread here */
static const float ROPE_BETA_SLOW   = 1.0f;

/* q = apply_rotary(q, cos, sin); x: [D, H, N], pos: [N] */
static struct ggml_tensor * rope(struct ggml_context * ctx, struct ggml_tensor * x, struct ggml_tensor * pos,
                                 const ngpt_hparams * hp) {
    const int D = hp->n_embd / hp->n_head;
    return ggml_rope_ext(ctx, x, pos,
                         NULL,          /* no per-dimension frequency factors */
                         D,             /* rotate every dimension of the head */
                         ROPE_MODE_ADJACENT_PAIRS,
                         hp->n_ctx,     /* n_ctx_orig: the context YaRN would extend */
                         hp->rope_theta,
                         ROPE_FREQ_SCALE, ROPE_EXT_FACTOR, ROPE_ATTN_FACTOR,
                         ROPE_BETA_FAST, ROPE_BETA_SLOW);                        /* [D, H, N] */
}

/* One of the model's norms (ln1, ln2 or ln_f: w and b are its weights, b
 * NULL for RMSNorm) over ne0, of the model's kind. x: [C, n] -> [C, n]
 *   LayerNorm: nn.LayerNorm(C, eps=norm_eps)
 *   RMSNorm:   x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight */
static struct ggml_tensor * build_norm(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * x,
                                       struct ggml_tensor * w, struct ggml_tensor * b) {
    const float eps = m->hp.norm_eps;
    switch (m->hp.norm_type) {
    case NGPT_NORM_RMS:
        x = ggml_rms_norm(ctx, x, eps);   /* x / sqrt(mean(x²) + eps) */
        return ggml_mul(ctx, x, w);
    default:
        x = ggml_norm(ctx, x, eps);       /* (x - mean) / sqrt(var + eps) */
        x = ggml_mul(ctx, x, w);
        return ggml_add(ctx, x, b);
    }
}

/* Join per-item tensors [C, n_i] into [C, N] pairwise, so each byte is copied
 * log2(items) times rather than once per item that follows it. */
static struct ggml_tensor * concat_rows(struct ggml_context * ctx, struct ggml_tensor ** parts, int n) {
    while (n > 1) {
        int out = 0;
        for (int i = 0; i < n; i += 2) {
            parts[out++] = i + 1 < n ? ggml_concat(ctx, parts[i], parts[i + 1], 1) : parts[i];
        }
        n = out;
    }
    return parts[0];
}

/* A block's linear layer, x @ w.T, where our products run. Its weights are
 * packed at load (see set_packed): per tile of 64 outputs, one vector holds
 * one input feature's weights for 16 outputs, and each token's feature is
 * broadcast against it. Every output is one chain of fused multiply-adds
 * from 0 in the order of the reduction, whatever the number of tokens: the
 * same bits for a token alone, batched with 63 others or in a prompt
 * chunk. One token streams the weights once, as ggml's product of one row
 * does; many use the FMA units, as panel_mul_mat does. A tile of four
 * vectors of outputs by WT_COLS tokens keeps 24 sums in registers, and
 * four independent chains even for one token. Thread ith of nth takes
 * every nth tile of outputs. */
#define WT_COLS 6   /* tokens per tile */

#if PANEL_PRODUCT
/* One tile: its outputs (lanes past M off) for cols ≤ WT_COLS tokens from x0. */
static inline __attribute__((always_inline)) PANEL_TARGET void wt_tile(const float * w, int K, const float * x0,
        size_t x_row, int cols, const __mmask16 live[4], float * d0, size_t d_row) {
    __m512 acc[4][WT_COLS];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
#pragma GCC unroll 6
        for (int c = 0; c < WT_COLS; c++) {
            acc[v][c] = _mm512_setzero_ps();
        }
    }
    for (int k = 0; k < K; k++) {
        __m512 wk[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            wk[v] = _mm512_loadu_ps(w + (size_t) k * WT_TILE + 16 * v);
        }
#pragma GCC unroll 6
        for (int c = 0; c < WT_COLS; c++) {
            if (c < cols) {
                const __m512 xk = _mm512_set1_ps(x0[(size_t) c * x_row + k]);
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++) {
                    acc[v][c] = _mm512_fmadd_ps(wk[v], xk, acc[v][c]);
                }
            }
        }
    }
#pragma GCC unroll 6
    for (int c = 0; c < WT_COLS; c++) {
        if (c < cols) {
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                _mm512_mask_storeu_ps(d0 + (size_t) c * d_row + 16 * v, live[v], acc[v][c]);
            }
        }
    }
}

/* dst [M, N] = x @ w.T for w packed ([WT_TILE · K, tiles], a row per tile)
 * and x: [K, N] with contiguous rows. */
static PANEL_TARGET void wt_mul_mat(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void) userdata;
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * x = dst->src[1];
    const int M = (int) dst->ne[0], K = (int) (w->ne[0] / WT_TILE), tiles = (int) w->ne[1], N = (int) x->ne[1];
    const size_t x_row = x->nb[1] / sizeof(float), d_row = dst->nb[1] / sizeof(float);
    for (int t = ith; t < tiles; t += nth) {
        const int m0 = t * WT_TILE;
        __mmask16 live[4];
        for (int v = 0; v < 4; v++) {
            const int left = M - m0 - 16 * v;
            live[v] = left >= 16 ? (__mmask16) 0xFFFF : left <= 0 ? (__mmask16) 0 : (__mmask16) ((1u << left) - 1);
        }
        const float * wt = (const float *) ((const char *) w->data + (size_t) t * w->nb[1]);
        for (int n0 = 0; n0 < N; n0 += WT_COLS) {
            const int cols = N - n0 < WT_COLS ? N - n0 : WT_COLS;
            wt_tile(wt, K, (const float *) x->data + (size_t) n0 * x_row, x_row, cols, live,
                    (float *) dst->data + (size_t) n0 * d_row + m0, d_row);
        }
    }
}
#endif

/* y = x @ w.T for a linear layer w of M outputs (a block's, a segment of
 * one, or lm_head), stored as load_weights left it; x: [K, n] -> [M, n],
 * every row at once. */
static struct ggml_tensor * linear(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * w, int64_t M,
                                   struct ggml_tensor * x) {
#if PANEL_PRODUCT
    if (packed(m, w)) {
        if (x->nb[0] != sizeof(float) || x->type != GGML_TYPE_F32) {
            x = ggml_cont(ctx, x);
        }
        struct ggml_tensor * args[2] = { w, x };
        return ggml_custom_4d(ctx, GGML_TYPE_F32, M, x->ne[1], 1, 1, args, 2, wt_mul_mat, GGML_N_TASKS_MAX, NULL);
    }
#endif
    return ggml_mul_mat(ctx, w, x);
}

#if PANEL_PRODUCT
/* dst [C, N] = the rows of the packed embedding (src[0], see set_packed)
 * for the ids in src[1]: id v's feature k is word v % WT_TILE of tile
 * v / WT_TILE's row k. An id outside the vocabulary (ngpt_step refuses
 * one before computing) would get zeros, never a read out of bounds. */
static void packed_rows_op(struct ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ngpt_model * m = userdata;
    const struct ggml_tensor * w   = dst->src[0];
    const struct ggml_tensor * ids = dst->src[1];
    const int C = (int) dst->ne[0], N = (int) dst->ne[1], V = m->hp.n_vocab;
    for (int n = ith; n < N; n += nth) {
        const int32_t v = ((const int32_t *) ids->data)[n];
        float * out = (float *) ((char *) dst->data + (size_t) n * dst->nb[1]);
        if (v < 0 || v >= V) {
            memset(out, 0, sizeof(float) * (size_t) C);
            continue;
        }
        const float * tile = (const float *) ((const char *) w->data + (size_t) (v / WT_TILE) * w->nb[1]);
        for (int k = 0; k < C; k++) {
            out[k] = tile[(size_t) k * WT_TILE + v % WT_TILE];
        }
    }
}
#endif

/* h = self.tok_emb(idx): [C, N] for ids [N]. The embedding is lm_head's
 * weight (tied), so where our products run it is stored packed, and its
 * rows are gathered from the tiles. */
static struct ggml_tensor * embed(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * ids) {
#if PANEL_PRODUCT
    if (packed(m, m->tok_emb)) {
        struct ggml_tensor * args[2] = { m->tok_emb, ids };
        return ggml_custom_4d(ctx, GGML_TYPE_F32, m->hp.n_embd, ids->ne[0], 1, 1, args, 2, packed_rows_op,
                              GGML_N_TASKS_MAX, (void *) m);
    }
#endif
    return ggml_get_rows(ctx, m->tok_emb, ids);
}

/* Room for the graph of one step; generous, since it only holds headers. */
static size_t graph_size(const ngpt_hparams * hp, int n_items) {
    return 64 + (size_t) hp->n_layer * (64 + 40 * (size_t) n_items);
}

static struct ggml_tensor * new_input(struct ggml_context * ctx, enum ggml_type type, int64_t n, const char * name) {
    struct ggml_tensor * t = ggml_new_tensor_1d(ctx, type, n);
    ggml_set_name(t, name);
    ggml_set_input(t);
    return t;
}

/* cache[n_past : t] = k, v for every item's new tokens at once, at the pool
 * rows inp_rows and inp_vrows name: inputs, so the graph stays the same as
 * sequences grow. V is stored transposed (positions fastest) so that
 * probs · v reads it as it lies; transposing the window at every step
 * instead was a quarter of a decode step. Its rows are then single floats,
 * one per (channel, token). k, v: [C, N]. The writes are expanded into the
 * graph at once: a prompt chunk that wants no outputs still fills the
 * cache. Returns the pool's K and V as written, which the reads view, so
 * reads follow writes. */
static void write_kv(step_graph * sg, const ngpt_model * m, int il, struct ggml_tensor * k, struct ggml_tensor * v,
                     struct ggml_tensor ** k_pool, struct ggml_tensor ** v_pool) {
    struct ggml_context * ctx = sg->ctx;
    struct ggml_tensor * kc = m->kv_k[il];  /* [C, P] */
    struct ggml_tensor * vc = m->kv_v[il];  /* [P·C] */
    const int64_t C = kc->ne[0], N = sg->N;

    *k_pool = ggml_set_rows(ctx, kc, k, sg->inp_rows);                                  /* [C, P] */
    ggml_build_forward_expand(sg->gf, *k_pool);

    struct ggml_tensor * v_dst = ggml_reshape_2d(ctx, vc, 1, ggml_nelements(vc));        /* [1, P·C] */
    struct ggml_tensor * v_new = ggml_reshape_2d(ctx, v, 1, C * N);                      /* [1, C·N] */
    *v_pool = ggml_set_rows(ctx, v_dst, v_new, sg->inp_vrows);                           /* [1, P·C] */
    ggml_build_forward_expand(sg->gf, *v_pool);
}

/* Attention of layer il for item i alone: each item attends to its own cache,
 * so only the projections are batched. q: [D, H, N] after rotary; kp, vp: the
 * pool's K [C, P] and V [1, P·C] as written this step. Returns the item's
 * heads side by side, [C, n]. */
static struct ggml_tensor * build_attn_item(step_graph * sg, const ngpt_model * m, int il, int i,
                                            struct ggml_tensor * q, struct ggml_tensor * kp,
                                            struct ggml_tensor * vp) {
    struct ggml_context * ctx = sg->ctx;
    const item_key * key = &sg->keys[i];
    item_slot      * s   = &sg->slots[i];
    const int C = m->hp.n_embd, H = m->hp.n_head, D = C / H, n = key->n_tokens, t_pad = key->t_pad;
    const size_t es = ggml_element_size(kp);   /* F32 or F16, see NGPT_KV_F32 */
    const size_t krow = m->kv_k[il]->nb[1], vrow = (size_t) key->cap * es;

    /* q.view(B, t, H, D).transpose(1, 2), and k likewise from the cache: views
     * with the heads' and tokens' strides swapped, one tensor each (a
     * cached graph keeps every tensor's header, for every item). A query
     * block is made contiguous so the scores go through sgemm. */
    struct ggml_tensor * q_i = ggml_view_3d(ctx, q, D, n, H, q->nb[2], q->nb[1],
                                            (size_t) s->first * q->nb[2]);            /* [D, n, H] */
    if (n > 1) {
        q_i = ggml_cont(ctx, q_i);
    }
    struct ggml_tensor * k_i = ggml_view_3d(ctx, kp, D, t_pad, H, krow, (size_t) D * es,
                                            (size_t) key->first * krow);              /* [D, t_pad, H] */

    /* scores = q @ k.transpose(-2, -1) / sqrt(D); masked_fill(triu(1), -inf);
     * probs = F.softmax(scores, dim=-1). The mask also hides the keys past t
     * that the padding reads, so their probabilities are exactly 0. */
    struct ggml_tensor * kq   = mul_mat(ctx, m, k_i, q_i);                          /* [t_pad, n, H] */
    struct ggml_tensor * mask = ggml_view_2d(ctx, sg->inp_mask, t_pad, n, (size_t) t_pad * sizeof(float),
                                             (size_t) s->mask_off * sizeof(float));   /* [t_pad, n] */
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / sqrtf((float) D), 0.0f);             /* scale fused in */
    if (key->probs) {
        ggml_set_output(kq);
        s->probs[il] = kq;
    }

    /* out = probs @ v; out.transpose(1, 2).reshape(B, t, C) */
    struct ggml_tensor * v_i = ggml_view_3d(ctx, vp, t_pad, D, H, vrow, (size_t) D * vrow,
                                            (size_t) key->first * krow);                         /* [t_pad, D, H] */
    struct ggml_tensor * kqv = mul_mat(ctx, m, v_i, kq);                                       /* [D, n, H] */
    if (key->masked) {
        /* out[:, h] *= keep[l, h]: an ablated head's output is exactly 0
         * (its probabilities and v are finite), a kept one's untouched. */
        struct ggml_tensor * keep = ggml_view_3d(ctx, sg->inp_heads, 1, 1, H, sizeof(float), sizeof(float),
                                                 (size_t) (s->heads_off + il * H) * sizeof(float)); /* [1, 1, H] */
        kqv = ggml_mul(ctx, kqv, keep);                                                          /* [D, n, H] */
    }
    if (n == 1) {
        return ggml_view_2d(ctx, kqv, C, 1, kqv->nb[2] * H, 0);  /* [C, 1]: one token's heads already lie in a row */
    }
    kqv = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));                                    /* [D, H, n] */
    return ggml_reshape_2d(ctx, kqv, C, n);                                                      /* [C, n] */
}

/* Attention.forward of layer il, up to (not including) proj. a = ln1(h): [C, N].
 * Returns [C, N]. */
static struct ggml_tensor * build_attn(step_graph * sg, const ngpt_model * m, int il, struct ggml_tensor * a) {
    struct ggml_context * ctx = sg->ctx;
    const ngpt_layer * ly = &m->layers[il];
    const int C = m->hp.n_embd, H = m->hp.n_head, D = C / H, N = sg->N;

    /* q, k, v = self.qkv(x).split(C, dim=-1): the three row blocks of Wqkv
     * are contiguous, so each is a plain view and three matmuls give
     * contiguous results without slicing the fused output. */
    const size_t wrow = ly->qkv_w->nb[1];
    /* packed, each block is a third of the tiles */
    const int64_t rows = packed(m, ly->qkv_w) ? ly->qkv_w->ne[1] / 3 : C;
    const int64_t cols = ly->qkv_w->ne[0];
    struct ggml_tensor * wq = ggml_view_2d(ctx, ly->qkv_w, cols, rows, wrow, 0 * rows * wrow); /* [C, C] or its tiles */
    struct ggml_tensor * wk = ggml_view_2d(ctx, ly->qkv_w, cols, rows, wrow, 1 * rows * wrow);
    struct ggml_tensor * wv = ggml_view_2d(ctx, ly->qkv_w, cols, rows, wrow, 2 * rows * wrow);
    struct ggml_tensor * q = ggml_reshape_3d(ctx, linear(ctx, m, wq, C, a), D, H, N);         /* [D, H, N] */
    struct ggml_tensor * k = ggml_reshape_3d(ctx, linear(ctx, m, wk, C, a), D, H, N);         /* [D, H, N] */
    struct ggml_tensor * v = linear(ctx, m, wv, C, a);                                        /* [C, N] */

    /* q = apply_rotary(q, cos, sin); k = apply_rotary(k, cos, sin) */
    q = rope(ctx, q, sg->inp_pos, &m->hp);                                            /* [D, H, N] */
    k = ggml_reshape_2d(ctx, rope(ctx, k, sg->inp_pos, &m->hp), C, N);                /* [C, N] */

    struct ggml_tensor * kp, * vp;
    write_kv(sg, m, il, k, v, &kp, &vp);
    struct ggml_tensor * dec = decode_attn_fits(sg, m) ? build_decode_attn(sg, m, il, q, kp, vp) : NULL;
    int n_parts = 0;
    for (int i = 0; i < sg->n_items;) {
        if (dec == NULL || sg->keys[i].n_tokens > 1) {
            sg->parts[n_parts++] = build_attn_item(sg, m, il, i, q, kp, vp);          /* [C, n_i] */
            i++;
            continue;
        }
        /* a run of decodes: adjacent columns of dec */
        int j = i;
        while (j < sg->n_items && sg->keys[j].n_tokens == 1) {
            j++;
        }
        sg->parts[n_parts++] = ggml_view_2d(ctx, dec, C, j - i, (size_t) C * sizeof(float),
                                            (size_t) sg->slots[i].dec_col * C * sizeof(float)); /* [C, j − i] */
        i = j;
    }
    return concat_rows(ctx, sg->parts, n_parts);                                      /* [C, N] */
}

/* MLP.forward of the model's kind. x: [C, n] -> [C, n]
 *   GELU:   self.fc2(F.gelu(self.fc1(x), approximate="none")), exact erf GELU
 *   SwiGLU: self.fc_out(F.silu(self.fc_g(x)) * self.fc_a(x)) */
static struct ggml_tensor * build_mlp(step_graph * sg, const ngpt_model * m, const ngpt_layer * ly,
                                      struct ggml_tensor * x) {
    struct ggml_context * ctx = sg->ctx;
    struct ggml_tensor * up = ggml_add(ctx, linear(ctx, m, ly->up_w, m->hp.n_ff, x), ly->up_b);         /* [F, n] */
    struct ggml_tensor * act;
    switch (m->hp.mlp_type) {
    case NGPT_MLP_SWIGLU: {
        struct ggml_tensor * gate = ggml_add(ctx, linear(ctx, m, ly->gate_w, m->hp.n_ff, x), ly->gate_b); /* [F, n] */
        act = ggml_swiglu_split(ctx, gate, up);                                                  /* silu(gate) * up */
        break;
    }
    default:
        act = gelu(ctx, m, up);                                                                  /* [F, n] */
        break;
    }
    return ggml_add(ctx, linear(ctx, m, ly->down_w, m->hp.n_embd, act), ly->down_b);                      /* [C, n] */
}

/* Block.forward of layer il; dropout is the identity at inference.
 * h: [C, N] -> [C, N], or [C, n_logits] after the last layer. Returns NULL
 * when nothing past the last attention is wanted. */
static struct ggml_tensor * build_block(step_graph * sg, const ngpt_model * m, int il, struct ggml_tensor * h) {
    struct ggml_context * ctx = sg->ctx;
    const ngpt_layer * ly  = &m->layers[il];

    /* a, probs = self.attn(self.ln1(h), cos, sin) */
    struct ggml_tensor * ln1 = build_norm(ctx, m, h, ly->ln1_w, ly->ln1_b);        /* [C, N] */
    struct ggml_tensor * att = build_attn(sg, m, il, ln1);                   /* [C, N] */

    const bool selected = il == m->hp.n_layer - 1 && sg->n_logits < sg->N;
    if (selected) {
        /* Past the last attention only the rows that give logits matter:
         * every other token's keys and values are cached already, and its
         * last-layer output feeds nothing. For a prompt that is most of
         * the last layer's work. */
        if (sg->n_logits == 0) {
            return NULL;
        }
        att = ggml_get_rows(ctx, att, sg->inp_last);                               /* [C, n_logits] */
        h   = ggml_get_rows(ctx, h, sg->inp_last);                                 /* [C, n_logits] */
    }

    /* h = h + self.resid_drop(a), a = self.proj(out) */
    h = ggml_add(ctx, h, linear(ctx, m, ly->proj_w, m->hp.n_embd, att));

    /* h = h + self.resid_drop(self.mlp(self.ln2(h))) */
    struct ggml_tensor * ln2 = build_norm(ctx, m, h, ly->ln2_w, ly->ln2_b);
    h = ggml_add(ctx, h, build_mlp(sg, m, ly, ln2));
    if (sg->n_lens > 0 && il < m->hp.n_layer - 1) {
        /* the residual stream after this block at each lens item's last
         * token, for the lens (the last block's is the logits' own) */
        sg->lens_parts[il] = ggml_get_rows(ctx, h, sg->inp_lens);                   /* [C, n_lens] */
    }
    return h;
}

/* logits = self.lm_head(self.ln_f(h)), lm_head tied to tok_emb. Also the
 * logit lens, which reads earlier layers' residual streams the same way.
 * h: [C, n] (only the rows wanted) -> [V, n] */
static struct ggml_tensor * build_logits(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * h,
                                         const char * name) {
    struct ggml_tensor * lnf = build_norm(ctx, m, h, m->lnf_w, m->lnf_b);              /* [C, n] */
    struct ggml_tensor * logits = linear(ctx, m, m->tok_emb, m->hp.n_vocab, lnf);      /* [V, n] */
    ggml_set_name(logits, name);
    ggml_set_output(logits);
    return logits;
}

/* Make room in g for a graph of n_items items; what it held is gone. */
static bool graph_room(step_graph * g, const ngpt_hparams * hp, int n_items, char * err, size_t err_len) {
    if (g->lens_parts == NULL || g->attn_ops == NULL) {
        free(g->lens_parts);
        free(g->attn_ops);
        g->lens_parts = calloc((size_t) hp->n_layer, sizeof(*g->lens_parts));
        g->attn_ops   = calloc((size_t) hp->n_layer, sizeof(*g->attn_ops));
        if (g->lens_parts == NULL || g->attn_ops == NULL) {
            set_oom(err, err_len);
            return false;
        }
    }
    if (n_items > g->cap_items) {
        free(g->keys);
        free(g->slots);
        free(g->parts);
        free(g->probs);
        free(g->dec_items);
        g->dec_items = calloc((size_t) n_items, sizeof(*g->dec_items));
        g->keys      = calloc((size_t) n_items, sizeof(*g->keys));
        g->slots     = calloc((size_t) n_items, sizeof(*g->slots));
        g->parts     = calloc((size_t) n_items, sizeof(*g->parts));
        g->probs     = calloc((size_t) n_items * (size_t) hp->n_layer, sizeof(*g->probs));
        g->cap_items = (g->keys && g->slots && g->parts && g->probs && g->dec_items) ? n_items : 0;
        if (g->cap_items == 0) {
            set_oom(err, err_len);
            return false;
        }
    }
    const size_t gsize = graph_size(hp, n_items);
    const size_t need  = ggml_tensor_overhead() * gsize + ggml_graph_overhead_custom(gsize, false);
    if (need > g->meta_size) {
        /* half again, so a batch that grows stream by stream reallocates
         * a few times rather than at every new stream */
        const size_t size = need > g->meta_size / 2 * 3 ? need : g->meta_size / 2 * 3;
        free(g->meta);
        g->meta      = malloc(size);
        g->meta_size = g->meta ? size : 0;
        if (g->meta == NULL) {
            set_oom(err, err_len);
            return false;
        }
    }
    return true;
}

/* Forget g's graph, keeping its memory for the next. */
static void reset_step_graph(step_graph * g) {
    if (g->ctx) ggml_free(g->ctx);  /* headers only: meta stays g's */
    g->ctx = NULL;
    g->gf = NULL;
    g->plan = 0;
    g->n_items = g->N = g->n_logits = g->n_mask = g->n_lens = g->n_heads = g->threads = 0;
    g->n_dec = g->n_dec_probs = 0;
    g->inp_tokens = g->inp_pos = g->inp_rows = g->inp_vrows = g->inp_last = g->inp_mask = g->logits = NULL;
    g->inp_lens = g->inp_heads = g->lens = NULL;
}

static step_graph * new_graphs(void) {
    return calloc(N_GRAPHS, sizeof(step_graph));
}

static void free_graphs(ngpt_model * m) {
    for (int i = 0; m->graphs && i < N_GRAPHS; i++) {
        step_graph * g = &m->graphs[i];
        reset_step_graph(g);
        free(g->keys);
        free(g->slots);
        free(g->parts);
        free(g->probs);
        free(g->lens_parts);
        free(g->attn_ops);
        free(g->dec_items);
        free(g->meta);
    }
    free(m->graphs);
    m->graphs = NULL;
}

/* A step whose prompt chunks and windows (items of more than one token)
 * hold at least this many tokens runs on every thread: its matmuls are long
 * enough to share. Decodes alone, and decodes with a short chunk, run on
 * one (see the threads section). */
#define SHARED_STEP_TOKENS 32

/* Lay the items' tokens and masks end to end, give a logits column to each
 * item that wants one, and choose the step's threads. keys: the items'
 * keys, copied into sg. */
static void layout_items(step_graph * sg, const ngpt_hparams * hp, const item_key * keys, int n_items) {
    const int L = hp->n_layer, H = hp->n_head;
    sg->n_items = n_items;
    memcpy(sg->keys, keys, sizeof(*keys) * (size_t) n_items);
    memset(sg->slots, 0, sizeof(*sg->slots) * (size_t) n_items);
    memset(sg->probs, 0, sizeof(*sg->probs) * (size_t) n_items * (size_t) L);
    memset(sg->lens_parts, 0, sizeof(*sg->lens_parts) * (size_t) L);
    sg->n_dec = sg->n_dec_probs = 0;
    int chunk_tokens = 0;
    for (int i = 0; i < n_items; i++) {
        const item_key * k = &keys[i];
        chunk_tokens += k->n_tokens > 1 ? k->n_tokens : 0;
        item_slot * s = &sg->slots[i];
        s->first     = sg->N;
        s->mask_off  = sg->n_mask;
        s->logit_row = k->logits != LOGITS_NONE ? sg->n_logits : -1;
        s->lens_col  = k->lens ? sg->n_lens++ : -1;
        s->heads_off = k->masked ? sg->n_heads : -1;
        s->probs     = k->probs ? sg->probs + (size_t) i * (size_t) L : NULL;
        s->dec_col   = k->n_tokens == 1 ? sg->n_dec : -1;
        s->probs_at  = k->n_tokens == 1 && k->probs ? sg->n_dec_probs : -1;
        if (k->n_tokens == 1) {
            sg->dec_items[sg->n_dec++] = i;
            sg->n_dec_probs += k->probs ? H * k->t_pad : 0;
        }
        sg->n_logits += k->logits == LOGITS_ALL ? k->n_tokens : k->logits == LOGITS_LAST ? 1 : 0;
        sg->n_heads  += k->masked ? L * H : 0;
        sg->N        += k->n_tokens;
        sg->n_mask   += k->t_pad * k->n_tokens;
    }
    sg->threads = chunk_tokens >= SHARED_STEP_TOKENS ? INT32_MAX : 1;
}

/* NielsGPT.forward for every item at once, into the reset graph sg, for the
 * keys in m->keys. */
static bool build_step_graph(ngpt_model * m, int n_items, step_graph * sg,
                             char * err, size_t err_len) {
    const size_t gsize = graph_size(&m->hp, n_items);
    if (!graph_room(sg, &m->hp, n_items, err, err_len)) {
        return false;
    }
    layout_items(sg, &m->hp, m->keys, n_items);
    struct ggml_init_params ip = { .mem_size = sg->meta_size, .mem_buffer = sg->meta, .no_alloc = true };
    sg->ctx = ggml_init(ip);
    if (sg->ctx == NULL) {
        set_oom(err, err_len);
        return false;
    }
    sg->gf = ggml_new_graph_custom(sg->ctx, gsize, false);

    sg->inp_tokens = new_input(sg->ctx, GGML_TYPE_I32, sg->N, "inp_tokens");
    sg->inp_pos    = new_input(sg->ctx, GGML_TYPE_I32, sg->N, "inp_pos");
    sg->inp_rows   = new_input(sg->ctx, GGML_TYPE_I32, sg->N, "inp_rows");
    sg->inp_vrows  = new_input(sg->ctx, GGML_TYPE_I32, (int64_t) m->hp.n_embd * sg->N, "inp_vrows");
    sg->inp_mask   = new_input(sg->ctx, GGML_TYPE_F32, sg->n_mask, "inp_mask");
    if (sg->n_logits > 0 && sg->n_logits < sg->N) {
        sg->inp_last = new_input(sg->ctx, GGML_TYPE_I32, sg->n_logits, "inp_last");
    }
    if (sg->n_lens > 0) {
        sg->inp_lens = new_input(sg->ctx, GGML_TYPE_I32, sg->n_lens, "inp_lens");
    }
    if (sg->n_heads > 0) {
        sg->inp_heads = new_input(sg->ctx, GGML_TYPE_F32, sg->n_heads, "inp_heads");
    }

    /* h = self.tok_emb(idx) */
    struct ggml_tensor * h = embed(sg->ctx, m, sg->inp_tokens);                    /* [C, N] */
    for (int il = 0; il < m->hp.n_layer && h != NULL; il++) {
        h = build_block(sg, m, il, h);
    }
    if (sg->n_logits > 0) {
        sg->logits = build_logits(sg->ctx, m, h, "logits");                         /* [V, n_logits] */
        ggml_build_forward_expand(sg->gf, sg->logits);
    }
    if (sg->n_lens > 0 && m->hp.n_layer > 1) {
        /* every earlier layer's rows through ln_f and lm_head in one product */
        struct ggml_tensor * rows = sg->lens_parts[0];
        for (int il = 1; il < m->hp.n_layer - 1; il++) {
            rows = ggml_concat(sg->ctx, rows, sg->lens_parts[il], 1);                /* [C, n_lens · il] */
        }
        sg->lens = build_logits(sg->ctx, m, rows, "lens");                         /* [V, n_lens · (L − 1)] */
        ggml_build_forward_expand(sg->gf, sg->lens);
    }
    /* The probabilities are outputs too; without logits they are the graph's
     * only ends besides the cache writes (a prompt chunk has neither). */
    for (int i = 0; i < n_items; i++) {
        for (int il = 0; sg->slots[i].probs != NULL && il < m->hp.n_layer; il++) {
            ggml_build_forward_expand(sg->gf, sg->slots[i].probs[il]);
        }
    }
    return true;
}

/* ---------------------------------------------------------------- step: evaluation */

/* Plan a new graph's memory in the shared compute buffer. Always afresh:
 * the allocator's own check only notices changed sizes, and two graphs of
 * the same size can differ in which probabilities are outputs (a traced
 * layer must not be reused as scratch). The tensors keep the addresses
 * planned here, so the graph can run again without planning, while the
 * buffer stays where it is; when this plan grows the buffer, every other
 * kept graph's plan points into freed memory and is dropped. */
static bool plan_step_graph(ngpt_model * m, step_graph * sg, char * err, size_t err_len) {
    if (!ggml_gallocr_reserve(m->galloc, sg->gf) || !ggml_gallocr_alloc_graph(m->galloc, sg->gf)) {
        set_err(err, err_len, "cannot allocate compute memory for %d tokens", sg->N);
        return false;
    }
    const size_t size = ggml_gallocr_get_buffer_size(m->galloc, 0);
    if (size != m->plan_size) {
        m->plan_size = size;
        m->plan_gen++;
    }
    sg->plan = m->plan_gen;
    return true;
}

/* The step's keys, in m->keys. */
static bool make_keys(ngpt_model * m, const ngpt_item * items, int n_items, char * err, size_t err_len) {
    if (n_items > m->keys_cap) {
        free(m->keys);
        m->keys     = calloc((size_t) n_items, sizeof(*m->keys));
        m->keys_cap = m->keys ? n_items : 0;
        if (m->keys == NULL) {
            set_oom(err, err_len);
            return false;
        }
    }
    for (int i = 0; i < n_items; i++) {
        make_key(&items[i], &m->keys[i]);
    }
    return true;
}

/* A kept graph for the keys in m->keys, or NULL. */
static step_graph * find_graph(ngpt_model * m, int n_items) {
    for (int i = 0; i < N_GRAPHS; i++) {
        step_graph * g = &m->graphs[i];
        if (g->plan == m->plan_gen && g->n_items == n_items &&
            memcmp(g->keys, m->keys, sizeof(*m->keys) * (size_t) n_items) == 0) {
            return g;
        }
    }
    return NULL;
}

/* A graph of more than this many items is built in the one place that has
 * held such a graph before, if any: graphs of big batches rarely repeat (in
 * a batch of 64 streams, one crosses a multiple of ATTN_PAD nearly every
 * step) and each keeps some 20 KiB of headers per item, so at most one is
 * worth its memory. */
#define BIG_GRAPH_ITEMS 16

/* The graph to build the next one, of n_items items, in: for a big one,
 * the one place for big graphs; else one never used or no longer valid, or
 * the least recently run. */
static step_graph * evict_graph(ngpt_model * m, int n_items) {
    step_graph * victim = &m->graphs[0];
    for (int i = 0; i < N_GRAPHS && n_items > BIG_GRAPH_ITEMS; i++) {
        if (m->graphs[i].cap_items > BIG_GRAPH_ITEMS) {
            reset_step_graph(&m->graphs[i]);
            return &m->graphs[i];
        }
    }
    for (int i = 0; i < N_GRAPHS; i++) {
        step_graph * g = &m->graphs[i];
        if (g->plan != m->plan_gen) {
            victim = g;
            break;
        }
        if (g->used < victim->used) {
            victim = g;
        }
    }
    reset_step_graph(victim);
    return victim;
}

/* Grow the model's staging buffer for the inputs of one step. */
static bool reserve_stage(ngpt_model * m, size_t size, char * err, size_t err_len) {
    if (size <= m->stage_size) {
        return true;
    }
    free(m->stage);
    m->stage      = malloc(size);
    m->stage_size = m->stage ? size : 0;
    if (m->stage == NULL) {
        set_oom(err, err_len);
        return false;
    }
    return true;
}

/* Item i's causal mask, [t_pad, n]: query r (at position n_past + r) sees
 * keys 0 .. n_past + r; later keys, and the padding past t, get −inf. */
static void fill_mask(float * mask, int n_past, int n, int t_pad) {
    for (int r = 0; r < n; r++) {
        float * row  = mask + (size_t) r * t_pad;
        const int seen = n_past + r + 1;
        for (int j = 0; j < t_pad; j++) {
            row[j] = j < seen ? 0.0f : -INFINITY;
        }
    }
}

/* Where item i's new values go: for its token j (position p = n_past + j)
 * and channel c, the float c·cap + p of its run's span, vrows[j·C + c]. */
static void fill_vrows(int32_t * vrows, const ngpt_item * it, int C) {
    const int64_t base = it->seq->first * C, cap = it->seq->capacity;
    for (int j = 0; j < it->n_tokens; j++) {
        const int64_t p = it->n_past + j;
        for (int c = 0; c < C; c++) {
            vrows[(size_t) j * C + c] = (int32_t) (base + c * cap + p);
        }
    }
}

/* Upload an input. One that no op reads has no memory (the allocator skips
 * what the graph does not reach): the mask of a one-layer model's prompt
 * chunk, whose only attention nothing needs. */
static void set_input(struct ggml_tensor * t, const void * data, size_t size) {
    if (t != NULL && t->buffer != NULL) {
        ggml_backend_tensor_set(t, data, 0, size);
    }
}

/* idx, the positions each item's new tokens take (n_past onwards), the pool
 * rows their keys and values go to, the row of each item's last token, and
 * the masks; staged in the model's buffer and uploaded. */
static bool set_step_inputs(ngpt_model * m, const step_graph * sg, const ngpt_item * items,
                            char * err, size_t err_len) {
    const size_t N = (size_t) sg->N, C = (size_t) m->hp.n_embd;
    const size_t n_ints = (3 + C) * N + (size_t) sg->n_logits + (size_t) sg->n_lens;
    const size_t n_floats = (size_t) sg->n_mask + (size_t) sg->n_heads;
    if (!reserve_stage(m, sizeof(int32_t) * n_ints + sizeof(float) * n_floats, err, err_len)) {
        return false;
    }
    int32_t * tok = m->stage, * pos = tok + N, * rows = pos + N, * vrows = rows + N, * last = vrows + C * N;
    int32_t * lens = last + sg->n_logits;
    float   * mask = (float *) (tok + n_ints), * heads = mask + sg->n_mask;
    const size_t head_floats = (size_t) m->hp.n_layer * (size_t) m->hp.n_head;
    for (int i = 0; i < sg->n_items; i++) {
        const ngpt_item * it = &items[i];
        const item_slot * s  = &sg->slots[i];
        for (int j = 0; j < it->n_tokens; j++) {
            tok[s->first + j]  = it->tokens[j];
            pos[s->first + j]  = it->n_past + j;
            rows[s->first + j] = (int32_t) (it->seq->first + it->n_past + j);
        }
        fill_vrows(vrows + (size_t) s->first * C, it, (int) C);
        if (sg->keys[i].logits == LOGITS_ALL) {
            for (int j = 0; j < it->n_tokens; j++) {
                last[s->logit_row + j] = s->first + j;
            }
        } else if (s->logit_row >= 0) {
            last[s->logit_row] = s->first + it->n_tokens - 1;
        }
        if (s->lens_col >= 0) {
            lens[s->lens_col] = s->first + it->n_tokens - 1;
        }
        if (s->heads_off >= 0) {
            memcpy(heads + s->heads_off, it->head_mask, sizeof(float) * head_floats);
        }
        fill_mask(mask + s->mask_off, it->n_past, it->n_tokens, sg->keys[i].t_pad);
    }
    set_input(sg->inp_tokens, tok, sizeof(int32_t) * N);
    set_input(sg->inp_pos, pos, sizeof(int32_t) * N);
    set_input(sg->inp_rows, rows, sizeof(int32_t) * N);
    set_input(sg->inp_vrows, vrows, sizeof(int32_t) * C * N);
    set_input(sg->inp_mask, mask, sizeof(float) * (size_t) sg->n_mask);
    set_input(sg->inp_last, last, sizeof(int32_t) * (size_t) sg->n_logits);
    set_input(sg->inp_lens, lens, sizeof(int32_t) * (size_t) sg->n_lens);
    set_input(sg->inp_heads, heads, sizeof(float) * (size_t) sg->n_heads);
    return true;
}

/* Attention reads each cache up to t_pad, past the positions written so far;
 * the mask gives those keys probability 0, but 0 · NaN is NaN, and a block
 * holds whatever its last holder left there (or nothing ever written). So
 * before a step reads new positions they are zeroed, once per ATTN_PAD
 * positions of a sequence's growth. */
static void clean_caches(const ngpt_model * m, const step_graph * sg, const ngpt_item * items) {
    for (int i = 0; i < sg->n_items; i++) {
        ngpt_seq * seq = items[i].seq;
        const int from = seq->clean, to = sg->keys[i].t_pad;
        if (to <= from) {
            continue;
        }
        const size_t C = (size_t) m->hp.n_embd, cap = (size_t) seq->capacity, np = (size_t) (to - from);
        const size_t f = kv_size(&m->hp);
        for (int l = 0; l < m->hp.n_layer; l++) {
            struct ggml_tensor * kc = m->kv_k[l];  /* [C, P] */
            struct ggml_tensor * vc = m->kv_v[l];  /* [P·C], the run's span [cap, C] */
            ggml_backend_tensor_memset(kc, 0, (size_t) (seq->first + from) * kc->nb[1], np * kc->nb[1]);
            for (size_t c = 0; c < C; c++) {
                ggml_backend_tensor_memset(vc, 0, ((size_t) seq->first * C + c * cap + (size_t) from) * f, np * f);
            }
        }
        seq->clean = to;
    }
}

static bool compute_step_graph(ngpt_model * m, step_graph * sg, char * err, size_t err_len) {
    enum ggml_status st = ggml_backend_graph_compute(m->backend, sg->gf);
    if (st != GGML_STATUS_SUCCESS) {
        set_err(err, err_len, "graph compute failed (status %d)", (int) st);
        return false;
    }
    return true;
}

/* Copy each item's logits, probabilities and lens into the caller's
 * buffers. The probabilities are [t_pad, n, H]: each row's first t entries
 * are the keys. */
static void read_step_outputs(const ngpt_model * m, const step_graph * sg, const ngpt_item * items) {
    const int H = m->hp.n_head, V = m->hp.n_vocab, L = m->hp.n_layer;
    const size_t vsize = sizeof(float) * (size_t) V;
    for (int i = 0; i < sg->n_items; i++) {
        const ngpt_item * it = &items[i];
        const item_slot * s  = &sg->slots[i];
        const int n = it->n_tokens, t = it->n_past + n;
        /* the column of the item's last token */
        const int last_row = sg->keys[i].logits == LOGITS_ALL ? s->logit_row + n - 1 : s->logit_row;
        if (it->all_logits) {
            ggml_backend_tensor_get(sg->logits, it->all_logits, (size_t) s->logit_row * sg->logits->nb[1],
                                    vsize * (size_t) n);
        }
        if (it->logits) {
            ggml_backend_tensor_get(sg->logits, it->logits, (size_t) last_row * sg->logits->nb[1], vsize);
        }
        for (int k = 0; k < it->n_trace; k++) {
            /* the newest query's row, for every head: row n−1 */
            const struct ggml_tensor * p = s->probs[it->trace_layers[k]];
            float * out = it->attn_rows + (size_t) k * (size_t) H * (size_t) t;
            for (int h = 0; h < H; h++) {
                ggml_backend_tensor_get(p, out + (size_t) h * t, (size_t) h * p->nb[2] + (size_t) (n - 1) * p->nb[1],
                                        sizeof(float) * (size_t) t);
            }
        }
        for (int k = 0; k < it->n_full; k++) {
            const struct ggml_tensor * p = s->probs[it->full_layers[k]];
            float * out = it->full_attn + (size_t) k * (size_t) H * (size_t) n * (size_t) t;
            for (int h = 0; h < H; h++) {
                for (int r = 0; r < n; r++) {
                    ggml_backend_tensor_get(p, out + ((size_t) h * n + (size_t) r) * (size_t) t,
                                            (size_t) h * p->nb[2] + (size_t) r * p->nb[1], sizeof(float) * (size_t) t);
                }
            }
        }
        if (it->lens) {
            for (int l = 0; l < L - 1; l++) {
                ggml_backend_tensor_get(sg->lens, it->lens + (size_t) l * V,
                                        ((size_t) l * (size_t) sg->n_lens + (size_t) s->lens_col) * sg->lens->nb[1],
                                        vsize);
            }
            ggml_backend_tensor_get(sg->logits, it->lens + (size_t) (L - 1) * V,
                                    (size_t) last_row * sg->logits->nb[1], vsize);
        }
    }
}

uint64_t ngpt_graphs_built(const ngpt_model * m) {
    return model_live(m) ? m->graphs_built : 0;
}

int ngpt_step(ngpt_model * m, const ngpt_item * items, int n_items, char * err, size_t err_len) {
    if (!model_live(m)) {
        set_err(err, err_len, "not a live model");
        return 1;
    }
    if (items == NULL || n_items < 1) {
        set_err(err, err_len, "empty step");
        return 1;
    }
    if (!items_ok(m, items, n_items, err, err_len)) {
        return 1;
    }
    if (!make_keys(m, items, n_items, err, err_len)) {
        return 1;
    }
    step_graph * g = find_graph(m, n_items);
    if (g == NULL) {
        g = evict_graph(m, n_items);
        if (!build_step_graph(m, n_items, g, err, err_len) || !plan_step_graph(m, g, err, err_len)) {
            reset_step_graph(g);
            return 1;
        }
        m->graphs_built++;
    }
    g->used = ++m->n_steps;
    if (!set_step_inputs(m, g, items, err, err_len)) {
        return 1;
    }
    clean_caches(m, g, items);
    const bool shared = g->threads > 1;
    use_threads(m, choose_threads(m, shared));
    const double began = now_seconds();
    if (!compute_step_graph(m, g, err, err_len)) {
        return 1;
    }
    if (shared && m->choice != NULL && m->n_threads > 1) {
        record_threads(m, g->N, now_seconds() - began);
    }
    read_step_outputs(m, g, items);
    return 0;
}
