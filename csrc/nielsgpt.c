/*
 * nielsgpt.c — niels-gpt generation 1 on ggml: weights, per-sequence KV
 * caches, and one batched forward graph per step.
 *
 * The maths mirrors the PyTorch reference model (scripts/niels_gpt.py; see
 * docs/ARCHITECTURE.md) line by line: the PyTorch statement is in the comment
 * beside each op. Shapes are written in ggml order: [ne0, ne1, ne2], ne0
 * fastest. C = width, D = head size, H = heads, F = d_ff, V = vocabulary,
 * N = tokens in this step (all sequences), n = one sequence's new tokens,
 * t = n_past + n (the keys one sequence attends to).
 *
 * A step runs the way ggml's own examples split graph from evaluation: check
 * the items, build the graph, allocate it, upload the inputs, compute, read
 * the outputs back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* dladdr */
#endif
#include "nielsgpt.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/* ---------------------------------------------------------------- model */

typedef struct ngpt_layer {
    struct ggml_tensor * ln1_w;   /* [C]      blocks.i.ln1.weight */
    struct ggml_tensor * ln1_b;   /* [C]      blocks.i.ln1.bias */
    struct ggml_tensor * qkv_w;   /* [C, 3C]  blocks.i.attn.qkv.weight */
    struct ggml_tensor * proj_w;  /* [C, C]   blocks.i.attn.proj.weight */
    struct ggml_tensor * ln2_w;   /* [C]      blocks.i.ln2.weight */
    struct ggml_tensor * ln2_b;   /* [C]      blocks.i.ln2.bias */
    struct ggml_tensor * fc1_w;   /* [C, F]   blocks.i.mlp.fc1.weight */
    struct ggml_tensor * fc1_b;   /* [F]      blocks.i.mlp.fc1.bias */
    struct ggml_tensor * fc2_w;   /* [F, C]   blocks.i.mlp.fc2.weight */
    struct ggml_tensor * fc2_b;   /* [C]      blocks.i.mlp.fc2.bias */
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
    struct ggml_tensor * lnf_b;    /* [C]    ln_f.bias */
    ngpt_layer         * layers;   /* [L] */

    ggml_backend_t          backend;
    char                    backend_desc[128];  /* ngpt_model_backend */
    struct ggml_threadpool * threadpool;        /* CPU only: persistent, pinned size */
    void                 (* threadpool_free)(struct ggml_threadpool *);  /* from the same backend */
    struct ggml_context   * weights_ctx;
    ggml_backend_buffer_t   weights_buf;
    ggml_gallocr_t          galloc;       /* compute memory, reused across steps */

    void * meta;       /* graph-building scratch (tensor headers only) */
    size_t meta_size;
};

struct ngpt_seq {
    uint64_t                magic;
    ngpt_model            * model;
    int                     capacity;
    struct ggml_context   * ctx;
    ggml_backend_buffer_t   buf;
    struct ggml_tensor   ** k;  /* [L] of [D, H, capacity], keys after rotary */
    struct ggml_tensor   ** v;  /* [L] of [capacity, D, H]: transposed, see build_attn_item */
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
} weight_spec;

static int n_weights(const ngpt_hparams * hp) {
    return 3 + 10 * hp->n_layer;
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
}

/* Every weight of the architecture, under its GGUF name; fills
 * n_weights(&m->hp) specs. */
static void list_weights(ngpt_model * m, weight_spec * specs) {
    const int64_t C = m->hp.n_embd, V = m->hp.n_vocab, F = m->hp.n_ff;
    weight_spec * s = specs;
    set_spec(s++, &m->tok_emb, 2, C, V, "token_embd.weight");
    set_spec(s++, &m->lnf_w,   1, C, 1, "output_norm.weight");
    set_spec(s++, &m->lnf_b,   1, C, 1, "output_norm.bias");
    for (int i = 0; i < m->hp.n_layer; i++) {
        ngpt_layer * l = &m->layers[i];
        set_spec(s++, &l->ln1_w,  1, C, 1,     "blk.%d.attn_norm.weight", i);
        set_spec(s++, &l->ln1_b,  1, C, 1,     "blk.%d.attn_norm.bias", i);
        set_spec(s++, &l->qkv_w,  2, C, 3 * C, "blk.%d.attn_qkv.weight", i);
        set_spec(s++, &l->proj_w, 2, C, C,     "blk.%d.attn_output.weight", i);
        set_spec(s++, &l->ln2_w,  1, C, 1,     "blk.%d.ffn_norm.weight", i);
        set_spec(s++, &l->ln2_b,  1, C, 1,     "blk.%d.ffn_norm.bias", i);
        set_spec(s++, &l->fc1_w,  2, C, F,     "blk.%d.ffn_up.weight", i);
        set_spec(s++, &l->fc1_b,  1, F, 1,     "blk.%d.ffn_up.bias", i);
        set_spec(s++, &l->fc2_w,  2, F, C,     "blk.%d.ffn_down.weight", i);
        set_spec(s++, &l->fc2_b,  1, C, 1,     "blk.%d.ffn_down.bias", i);
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

/* Create the weights, in the file's types, in one buffer on the device and
 * copy them there from the blob. */
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
        struct ggml_tensor * t = s->n_dims == 1
            ? ggml_new_tensor_1d(m->weights_ctx, type, s->ne0)
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
        ggml_backend_tensor_set(*specs[i].dst, src, 0, found[i]->nbytes);
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

/* Give a CPU backend its persistent threadpool. The functions come from the
 * device's own registry entry, never from ggml-cpu.h: when a CPU module was
 * loaded, the built-in backend's functions would start the built-in
 * backend's threads, running its kernels instead of the module's. */
static bool start_threadpool(ngpt_model * m, ggml_backend_dev_t dev, int n_threads, char * err, size_t err_len) {
    typedef struct ggml_threadpool * (*threadpool_new_t)(struct ggml_threadpool_params *);
    typedef void (*set_threadpool_t)(ggml_backend_t, struct ggml_threadpool *);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_set_n_threads_t set_n_threads =
        (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    threadpool_new_t threadpool_new = (threadpool_new_t) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    set_threadpool_t set_threadpool =
        (set_threadpool_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_cpu_set_threadpool");
    m->threadpool_free = (void (*)(struct ggml_threadpool *)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (set_n_threads == NULL || threadpool_new == NULL || set_threadpool == NULL || m->threadpool_free == NULL) {
        set_err(err, err_len, "the CPU backend %s has no threadpool functions", ggml_backend_reg_name(reg));
        return false;
    }
    /* ggml's default is 4 threads and a fresh pool per graph; on a small
     * machine that oversubscribes the cores and costs more than the maths.
     * poll = 0: idle workers sleep between steps instead of spinning on
     * the cores the Go side needs for sampling and streaming. */
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    tpp.poll = 0;
    m->threadpool = threadpool_new(&tpp);
    if (m->threadpool == NULL) {
        set_err(err, err_len, "cannot start a CPU threadpool of %d threads", n_threads);
        return false;
    }
    set_n_threads(m->backend, n_threads);
    set_threadpool(m->backend, m->threadpool);
    return true;
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
    if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) {
        return start_threadpool(m, dev, n_threads, err, err_len);
    }
    return true;
}

/* ---------------------------------------------------------------- loading: the model */

ngpt_model * ngpt_model_load(const ngpt_hparams * hp, const void * blob, size_t blob_len,
                             const ngpt_tensor_ref * refs, int n_refs, const char * device,
                             int n_threads, char * err, size_t err_len) {
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
    /* KV caches come and go in pieces of a few hundred KiB. glibc serves
     * those with mmap until the first is freed, then raises its threshold and
     * serves them from the heap, where freed caches fragment and never go
     * back to the OS (peak RSS doubled under 64 streams). A fixed threshold
     * keeps every cache its own mapping. */
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
    if (!load_weights(m, specs, n_specs, found, blob, err, err_len)) {
        goto fail;
    }
    m->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(m->backend));
    if (m->galloc == NULL) {
        set_err(err, err_len, "cannot create the graph allocator");
        goto fail;
    }
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
    if (m->weights_buf) ggml_backend_buffer_free(m->weights_buf);
    if (m->weights_ctx) ggml_free(m->weights_ctx);
    if (m->backend) ggml_backend_free(m->backend);
    if (m->threadpool) m->threadpool_free(m->threadpool);
    free(m->meta);
    free(m->layers);
    free(m);
    return 0;
}

const char * ngpt_model_backend(const ngpt_model * m) {
    return model_live(m) ? m->backend_desc : "";
}

/* ---------------------------------------------------------------- sequences */

ngpt_seq * ngpt_seq_new(ngpt_model * m, int capacity, char * err, size_t err_len) {
    if (!model_live(m)) {
        set_err(err, err_len, "not a live model");
        return NULL;
    }
    if (capacity < 1 || capacity > m->hp.n_ctx) {
        set_err(err, err_len, "sequence capacity %d out of range [1, %d]", capacity, m->hp.n_ctx);
        return NULL;
    }
    const int L = m->hp.n_layer, H = m->hp.n_head, D = m->hp.n_embd / m->hp.n_head;
    ngpt_seq * s = calloc(1, sizeof(*s));
    if (s == NULL) {
        set_oom(err, err_len);
        return NULL;
    }
    s->magic    = SEQ_MAGIC;
    s->model    = m;
    s->capacity = capacity;
    m->n_seqs++;
    s->k = calloc((size_t) L, sizeof(*s->k));
    s->v = calloc((size_t) L, sizeof(*s->v));
    struct ggml_init_params ip = {
        .mem_size   = ggml_tensor_overhead() * (size_t) (2 * L),
        .mem_buffer = NULL,
        .no_alloc   = true,
    };
    s->ctx = (s->k && s->v) ? ggml_init(ip) : NULL;
    if (s->ctx == NULL) {
        set_oom(err, err_len);
        ngpt_seq_free(s);
        return NULL;
    }
    for (int l = 0; l < L; l++) {
        s->k[l] = ggml_new_tensor_3d(s->ctx, GGML_TYPE_F32, D, H, capacity);
        s->v[l] = ggml_new_tensor_3d(s->ctx, GGML_TYPE_F32, capacity, D, H);
    }
    s->buf = ggml_backend_alloc_ctx_tensors(s->ctx, m->backend);
    if (s->buf == NULL) {
        set_err(err, err_len, "cannot allocate a KV cache of %d positions", capacity);
        ngpt_seq_free(s);
        return NULL;
    }
    return s;
}

int ngpt_seq_grow(ngpt_seq * s, int capacity, int n_keep, char * err, size_t err_len) {
    if (!seq_live(s)) {
        set_err(err, err_len, "not a live sequence");
        return 1;
    }
    if (n_keep < 0 || n_keep > s->capacity) {
        set_err(err, err_len, "cannot keep %d positions", n_keep);
        return 1;
    }
    if (capacity <= s->capacity) {
        return 0;
    }
    ngpt_seq * fresh = ngpt_seq_new(s->model, capacity, err, err_len);
    if (fresh == NULL) {
        return 1;
    }
    const int L = s->model->hp.n_layer;
    size_t most = 0;
    for (int l = 0; l < L; l++) {
        most = ggml_nbytes(s->v[l]) > most ? ggml_nbytes(s->v[l]) : most;
    }
    float * tmp = n_keep > 0 ? malloc(most) : NULL;
    if (n_keep > 0 && tmp == NULL) {
        ngpt_seq_free(fresh);
        set_oom(err, err_len);
        return 1;
    }
    for (int l = 0; l < L && n_keep > 0; l++) {
        /* K [D, H, cap]: the kept positions are one contiguous prefix */
        size_t kbytes = (size_t) n_keep * s->k[l]->nb[2];
        ggml_backend_tensor_get(s->k[l], tmp, 0, kbytes);
        ggml_backend_tensor_set(fresh->k[l], tmp, 0, kbytes);
        /* V [cap, D, H]: a prefix of every (d, h) row, whose stride changes */
        struct ggml_tensor * vo = s->v[l], * vn = fresh->v[l];
        ggml_backend_tensor_get(vo, tmp, 0, ggml_nbytes(vo));
        int64_t rows = vo->ne[1] * vo->ne[2];
        for (int64_t r = 0; r < rows; r++) {
            ggml_backend_tensor_set(vn, (const char *) tmp + r * vo->nb[1], (size_t) r * vn->nb[1],
                                    (size_t) n_keep * sizeof(float));
        }
    }
    free(tmp);
    /* swap the storage so the caller's handle stays valid */
    ngpt_seq old = *s;
    s->capacity = fresh->capacity; s->ctx = fresh->ctx; s->buf = fresh->buf; s->k = fresh->k; s->v = fresh->v;
    fresh->capacity = old.capacity; fresh->ctx = old.ctx; fresh->buf = old.buf; fresh->k = old.k; fresh->v = old.v;
    ngpt_seq_free(fresh);
    return 0;
}

int ngpt_seq_free(ngpt_seq * s) {
    if (s == NULL) {
        return 0;
    }
    if (!seq_live(s)) {
        return 1;
    }
    s->magic = 0;
    s->model->n_seqs--;
    if (s->buf) ggml_backend_buffer_free(s->buf);
    if (s->ctx) ggml_free(s->ctx);
    free(s->k);
    free(s->v);
    free(s);
    return 0;
}

/* ---------------------------------------------------------------- step: items */

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
        if (it->n_past < 0 || it->n_past > it->seq->capacity || it->n_tokens > it->seq->capacity - it->n_past) {
            set_err(err, err_len, "item %d: positions %d..%lld exceed the cache of %d", i, it->n_past,
                    (long long) it->n_past + it->n_tokens, it->seq->capacity);
            return false;
        }
        for (int j = 0; j < it->n_tokens; j++) {
            if (it->tokens[j] < 0 || it->tokens[j] >= hp->n_vocab) {
                set_err(err, err_len, "item %d: token %d out of range", i, it->tokens[j]);
                return false;
            }
        }
        if (it->trace_layer < -1 || it->trace_layer >= hp->n_layer || (it->trace_layer >= 0 && it->attn_row == NULL)) {
            set_err(err, err_len, "item %d: bad trace layer %d", i, it->trace_layer);
            return false;
        }
        if (it->full_layer < -1 || it->full_layer >= hp->n_layer ||
            (it->full_layer >= 0 && (it->full_head < 0 || it->full_head >= hp->n_head || it->full_attn == NULL))) {
            set_err(err, err_len, "item %d: bad full-attention layer %d head %d", i, it->full_layer, it->full_head);
            return false;
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

/* ---------------------------------------------------------------- step: graph */

/* Where one item's tensors sit inside the step's graph. */
typedef struct item_slot {
    int                  first;      /* index of its first token among the N */
    int                  logit_row;  /* its column of the logits, or -1 */
    struct ggml_tensor * traced;     /* [t, n, H] probabilities of trace_layer, or NULL */
    struct ggml_tensor * full;       /* [t, n, H] probabilities of full_layer, or NULL */
} item_slot;

/* One step's graph with the tensors around it: inputs to upload after
 * allocation, outputs to read after compute. Its structure depends only on
 * the batch's shape (each item's sequence, n_past, n_tokens and wanted
 * outputs); token ids and positions are input data. That is what a later
 * cache of graphs and allocations per shape would key on. */
typedef struct step_graph {
    struct ggml_context * ctx;         /* tensor headers, in the model's meta buffer */
    struct ggml_cgraph  * gf;
    int                   N;           /* tokens in the step, all items */
    int                   n_logits;    /* items that want logits */
    item_slot           * slots;       /* [n_items] */
    struct ggml_tensor ** parts;       /* [n_items] scratch: one layer's per-item attention */
    struct ggml_tensor  * inp_tokens;  /* [N] token ids */
    struct ggml_tensor  * inp_pos;     /* [N] positions */
    struct ggml_tensor  * inp_last;    /* [n_logits] rows that give logits; NULL when all or none do */
    struct ggml_tensor  * logits;      /* [V, n_logits]; NULL when no item wants them */
} step_graph;

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

/* nn.LayerNorm(C, eps=norm_eps) over ne0; x: [C, n] */
static struct ggml_tensor * layer_norm(struct ggml_context * ctx, struct ggml_tensor * x,
                                       struct ggml_tensor * w, struct ggml_tensor * b, float eps) {
    x = ggml_norm(ctx, x, eps);   /* (x - mean) / sqrt(var + eps) */
    x = ggml_mul(ctx, x, w);
    return ggml_add(ctx, x, b);
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

/* Room for the graph of one step; generous, since it only holds headers. */
static size_t graph_size(const ngpt_hparams * hp, int n_items) {
    return 64 + (size_t) hp->n_layer * (48 + 32 * (size_t) n_items);
}

static struct ggml_tensor * new_input(struct ggml_context * ctx, int64_t n, const char * name) {
    struct ggml_tensor * t = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_set_name(t, name);
    ggml_set_input(t);
    return t;
}

/* Attention of layer il for item i alone: each item attends to its own cache,
 * so only the projections are batched. q, k, v: [D, H, N] for the whole step,
 * after rotary. Returns the item's heads side by side, [C, n]. */
static struct ggml_tensor * build_attn_item(step_graph * sg, const ngpt_model * m, int il, const ngpt_item * it,
                                            int i, struct ggml_tensor * q, struct ggml_tensor * k,
                                            struct ggml_tensor * v) {
    struct ggml_context * ctx = sg->ctx;
    const int    C = m->hp.n_embd, H = m->hp.n_head, D = C / H;
    const int    n = it->n_tokens, t = it->n_past + n;
    const size_t tok_off = (size_t) sg->slots[i].first * q->nb[2];
    struct ggml_tensor * kc = it->seq->k[il];  /* [D, H, capacity] */
    struct ggml_tensor * vc = it->seq->v[il];  /* [capacity, D, H] */

    /* cache[n_past : t] = k, v of the new tokens (the reference recomputes
     * the whole window instead). Expanded into the graph now so the copies
     * run before the reads below: the reads are views of the cache, not of
     * these copies. V is stored transposed (positions fastest) so that
     * probs · v reads it as it lies; transposing the whole window at every
     * step instead was a quarter of a decode step, element by element. */
    struct ggml_tensor * k_new = ggml_view_3d(ctx, k, D, H, n, k->nb[1], k->nb[2], tok_off);      /* [D, H, n] */
    struct ggml_tensor * v_new = ggml_view_3d(ctx, v, D, H, n, v->nb[1], v->nb[2], tok_off);      /* [D, H, n] */
    struct ggml_tensor * k_dst = ggml_view_3d(ctx, kc, D, H, n, kc->nb[1], kc->nb[2],
                                              (size_t) it->n_past * kc->nb[2]);                   /* [D, H, n] */
    struct ggml_tensor * v_dst = ggml_view_3d(ctx, vc, n, D, H, vc->nb[1], vc->nb[2],
                                              (size_t) it->n_past * vc->nb[0]);                   /* [n, D, H] */
    ggml_build_forward_expand(sg->gf, ggml_cpy(ctx, k_new, k_dst));
    ggml_build_forward_expand(sg->gf, ggml_cpy(ctx, ggml_permute(ctx, v_new, 1, 2, 0, 3), v_dst));

    /* q.view(B, t, H, D).transpose(1, 2), and k likewise from the cache */
    struct ggml_tensor * q_i = ggml_view_3d(ctx, q, D, H, n, q->nb[1], q->nb[2], tok_off);
    q_i = ggml_permute(ctx, q_i, 0, 2, 1, 3);                                      /* [D, n, H] */
    struct ggml_tensor * k_i = ggml_view_3d(ctx, kc, D, H, t, kc->nb[1], kc->nb[2], 0);
    k_i = ggml_permute(ctx, k_i, 0, 2, 1, 3);                                      /* [D, t, H] */

    /* scores = q @ k.transpose(-2, -1) / sqrt(D); masked_fill(triu(1), -inf);
     * probs = F.softmax(scores, dim=-1) */
    struct ggml_tensor * kq = ggml_mul_mat(ctx, k_i, q_i);                         /* [t, n, H] */
    if (n > 1) {
        kq = ggml_diag_mask_inf(ctx, kq, it->n_past);  /* key j > n_past + row: −inf, so p = 0 */
    }
    kq = ggml_soft_max_ext(ctx, kq, NULL, 1.0f / sqrtf((float) D), 0.0f);         /* scale fused in */
    ggml_format_name(kq, "l%d.s%d.kq_softmax", il, i);
    if (it->trace_layer == il) {
        ggml_set_output(kq);
        sg->slots[i].traced = kq;
    }
    if (it->full_layer == il) {
        ggml_set_output(kq);
        sg->slots[i].full = kq;
    }

    /* out = probs @ v; out.transpose(1, 2).reshape(B, t, C) */
    struct ggml_tensor * v_i = ggml_view_3d(ctx, vc, t, D, H, vc->nb[1], vc->nb[2], 0); /* [t, D, H] */
    struct ggml_tensor * kqv = ggml_mul_mat(ctx, v_i, kq);                          /* [D, n, H] */
    kqv = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3));                       /* [D, H, n] */
    return ggml_reshape_2d(ctx, kqv, C, n);                                         /* [C, n] */
}

/* Attention.forward of layer il, up to (not including) proj. a = ln1(h): [C, N].
 * Returns [C, N]. */
static struct ggml_tensor * build_attn(step_graph * sg, const ngpt_model * m, const ngpt_item * items,
                                       int n_items, int il, struct ggml_tensor * a) {
    struct ggml_context * ctx = sg->ctx;
    const ngpt_layer * ly = &m->layers[il];
    const int C = m->hp.n_embd, H = m->hp.n_head, D = C / H, N = sg->N;

    /* q, k, v = self.qkv(x).split(C, dim=-1): the three row blocks of Wqkv
     * are contiguous, so each is a plain view and three matmuls give
     * contiguous results without slicing the fused output. */
    const size_t wrow = ly->qkv_w->nb[1];
    struct ggml_tensor * wq = ggml_view_2d(ctx, ly->qkv_w, C, C, wrow, 0 * C * wrow); /* [C, C] */
    struct ggml_tensor * wk = ggml_view_2d(ctx, ly->qkv_w, C, C, wrow, 1 * C * wrow); /* [C, C] */
    struct ggml_tensor * wv = ggml_view_2d(ctx, ly->qkv_w, C, C, wrow, 2 * C * wrow); /* [C, C] */
    struct ggml_tensor * q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wq, a), D, H, N); /* [D, H, N] */
    struct ggml_tensor * k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wk, a), D, H, N); /* [D, H, N] */
    struct ggml_tensor * v = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wv, a), D, H, N); /* [D, H, N] */

    /* q = apply_rotary(q, cos, sin); k = apply_rotary(k, cos, sin) */
    q = rope(ctx, q, sg->inp_pos, &m->hp);                                          /* [D, H, N] */
    k = rope(ctx, k, sg->inp_pos, &m->hp);                                          /* [D, H, N] */
    ggml_format_name(q, "l%d.q", il);
    ggml_format_name(k, "l%d.k", il);

    for (int i = 0; i < n_items; i++) {
        sg->parts[i] = build_attn_item(sg, m, il, &items[i], i, q, k, v);          /* [C, n_i] */
    }
    return concat_rows(ctx, sg->parts, n_items);                                    /* [C, N] */
}

/* MLP.forward: self.fc2(F.gelu(self.fc1(x), approximate="none")), GELU in its
 * exact erf form. x: [C, n] -> [C, n] */
static struct ggml_tensor * build_mlp(struct ggml_context * ctx, const ngpt_layer * ly, struct ggml_tensor * x) {
    struct ggml_tensor * up = ggml_add(ctx, ggml_mul_mat(ctx, ly->fc1_w, x), ly->fc1_b); /* [F, n] */
    struct ggml_tensor * act = ggml_gelu_erf(ctx, up);                                  /* [F, n] */
    return ggml_add(ctx, ggml_mul_mat(ctx, ly->fc2_w, act), ly->fc2_b);                 /* [C, n] */
}

/* Block.forward of layer il; dropout is the identity at inference.
 * h: [C, N] -> [C, N], or [C, n_logits] after the last layer. Returns NULL
 * when nothing past the last attention is wanted. */
static struct ggml_tensor * build_block(step_graph * sg, const ngpt_model * m, const ngpt_item * items,
                                        int n_items, int il, struct ggml_tensor * h) {
    struct ggml_context * ctx = sg->ctx;
    const ngpt_layer * ly  = &m->layers[il];
    const float        eps = m->hp.norm_eps;

    /* a, probs = self.attn(self.ln1(h), cos, sin) */
    struct ggml_tensor * ln1 = layer_norm(ctx, h, ly->ln1_w, ly->ln1_b, eps);      /* [C, N] */
    ggml_format_name(ln1, "l%d.ln1", il);
    struct ggml_tensor * att = build_attn(sg, m, items, n_items, il, ln1);          /* [C, N] */

    if (il == m->hp.n_layer - 1 && sg->n_logits < sg->N) {
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
    h = ggml_add(ctx, h, ggml_mul_mat(ctx, ly->proj_w, att));
    ggml_format_name(h, "l%d.attn_res", il);

    /* h = h + self.resid_drop(self.mlp(self.ln2(h))) */
    struct ggml_tensor * ln2 = layer_norm(ctx, h, ly->ln2_w, ly->ln2_b, eps);
    h = ggml_add(ctx, h, build_mlp(ctx, ly, ln2));
    ggml_format_name(h, "l%d.out", il);
    return h;
}

/* logits = self.lm_head(self.ln_f(h)), lm_head tied to tok_emb.
 * h: [C, n_logits] (only the rows that want logits) -> [V, n_logits] */
static struct ggml_tensor * build_logits(struct ggml_context * ctx, const ngpt_model * m, struct ggml_tensor * h) {
    struct ggml_tensor * lnf = layer_norm(ctx, h, m->lnf_w, m->lnf_b, m->hp.norm_eps); /* [C, n_logits] */
    struct ggml_tensor * logits = ggml_mul_mat(ctx, m->tok_emb, lnf);                  /* [V, n_logits] */
    ggml_set_name(logits, "logits");
    ggml_set_output(logits);
    return logits;
}

/* Grow the model's header scratch to hold a graph of gsize nodes. */
static bool reserve_meta(ngpt_model * m, size_t gsize, char * err, size_t err_len) {
    const size_t size = ggml_tensor_overhead() * gsize + ggml_graph_overhead_custom(gsize, false);
    if (size <= m->meta_size) {
        return true;
    }
    free(m->meta);
    m->meta      = malloc(size);
    m->meta_size = m->meta ? size : 0;
    if (m->meta == NULL) {
        set_oom(err, err_len);
        return false;
    }
    return true;
}

/* Lay the items' tokens end to end and give a logits column to each item
 * that wants one. */
static bool layout_items(step_graph * sg, const ngpt_item * items, int n_items, char * err, size_t err_len) {
    sg->slots = calloc((size_t) n_items, sizeof(*sg->slots));
    sg->parts = calloc((size_t) n_items, sizeof(*sg->parts));
    if (sg->slots == NULL || sg->parts == NULL) {
        set_oom(err, err_len);
        return false;
    }
    for (int i = 0; i < n_items; i++) {
        sg->slots[i].first     = sg->N;
        sg->N                 += items[i].n_tokens;
        sg->slots[i].logit_row = items[i].logits ? sg->n_logits++ : -1;
    }
    return true;
}

/* NielsGPT.forward for every item at once. On failure sg can still be freed. */
static bool build_step_graph(ngpt_model * m, const ngpt_item * items, int n_items, step_graph * sg,
                             char * err, size_t err_len) {
    memset(sg, 0, sizeof(*sg));
    const size_t gsize = graph_size(&m->hp, n_items);
    if (!layout_items(sg, items, n_items, err, err_len) || !reserve_meta(m, gsize, err, err_len)) {
        return false;
    }
    struct ggml_init_params ip = { .mem_size = m->meta_size, .mem_buffer = m->meta, .no_alloc = true };
    sg->ctx = ggml_init(ip);
    if (sg->ctx == NULL) {
        set_oom(err, err_len);
        return false;
    }
    sg->gf = ggml_new_graph_custom(sg->ctx, gsize, false);

    sg->inp_tokens = new_input(sg->ctx, sg->N, "inp_tokens");
    sg->inp_pos    = new_input(sg->ctx, sg->N, "inp_pos");
    if (sg->n_logits > 0 && sg->n_logits < sg->N) {
        sg->inp_last = new_input(sg->ctx, sg->n_logits, "inp_last");
    }

    /* h = self.tok_emb(idx) */
    struct ggml_tensor * h = ggml_get_rows(sg->ctx, m->tok_emb, sg->inp_tokens);   /* [C, N] */
    for (int il = 0; il < m->hp.n_layer && h != NULL; il++) {
        h = build_block(sg, m, items, n_items, il, h);
    }
    if (sg->n_logits > 0) {
        sg->logits = build_logits(sg->ctx, m, h);                                   /* [V, n_logits] */
        ggml_build_forward_expand(sg->gf, sg->logits);
    }
    /* The probabilities are outputs too; without logits they are the graph's
     * only ends. A step with no outputs at all (a prefill chunk) still writes
     * the caches: those copies were expanded as the layers were built. */
    for (int i = 0; i < n_items; i++) {
        if (sg->slots[i].traced) ggml_build_forward_expand(sg->gf, sg->slots[i].traced);
        if (sg->slots[i].full) ggml_build_forward_expand(sg->gf, sg->slots[i].full);
    }
    return true;
}

static void free_step_graph(step_graph * sg) {
    if (sg->ctx) ggml_free(sg->ctx);  /* headers only: the meta buffer stays the model's */
    free(sg->slots);
    free(sg->parts);
    memset(sg, 0, sizeof(*sg));
}

/* ---------------------------------------------------------------- step: evaluation */

/* Plan the memory afresh for every graph: the allocator's cached plan is only
 * re-made when sizes change, and two graphs of the same shape can differ in
 * which probabilities are outputs (a traced layer must not be reused as
 * scratch). Planning is cheap next to the maths. */
static bool alloc_step_graph(ngpt_model * m, step_graph * sg, char * err, size_t err_len) {
    if (!ggml_gallocr_reserve(m->galloc, sg->gf) || !ggml_gallocr_alloc_graph(m->galloc, sg->gf)) {
        set_err(err, err_len, "cannot allocate compute memory for %d tokens", sg->N);
        return false;
    }
    return true;
}

/* idx, the positions each item's new tokens take (n_past onwards), and the
 * row of each item's last token. */
static bool set_step_inputs(const step_graph * sg, const ngpt_item * items, int n_items,
                            char * err, size_t err_len) {
    const int N = sg->N;
    int32_t * buf = malloc(sizeof(int32_t) * (size_t) (2 * N + sg->n_logits));
    if (buf == NULL) {
        set_oom(err, err_len);
        return false;
    }
    int32_t * tok = buf, * pos = buf + N, * last = buf + 2 * N;
    for (int i = 0; i < n_items; i++) {
        const ngpt_item * it = &items[i];
        const item_slot * s  = &sg->slots[i];
        for (int j = 0; j < it->n_tokens; j++) {
            tok[s->first + j] = it->tokens[j];
            pos[s->first + j] = it->n_past + j;
        }
        if (s->logit_row >= 0) {
            last[s->logit_row] = s->first + it->n_tokens - 1;
        }
    }
    ggml_backend_tensor_set(sg->inp_tokens, tok, 0, sizeof(int32_t) * (size_t) N);
    ggml_backend_tensor_set(sg->inp_pos, pos, 0, sizeof(int32_t) * (size_t) N);
    if (sg->inp_last) {
        ggml_backend_tensor_set(sg->inp_last, last, 0, sizeof(int32_t) * (size_t) sg->n_logits);
    }
    free(buf);
    return true;
}

static bool compute_step_graph(ngpt_model * m, step_graph * sg, char * err, size_t err_len) {
    enum ggml_status st = ggml_backend_graph_compute(m->backend, sg->gf);
    if (st != GGML_STATUS_SUCCESS) {
        set_err(err, err_len, "graph compute failed (status %d)", (int) st);
        return false;
    }
    return true;
}

/* Copy each item's logits and probabilities into the caller's buffers. */
static void read_step_outputs(const ngpt_model * m, const step_graph * sg, const ngpt_item * items, int n_items) {
    const int H = m->hp.n_head, V = m->hp.n_vocab;
    for (int i = 0; i < n_items; i++) {
        const ngpt_item * it = &items[i];
        const item_slot * s  = &sg->slots[i];
        const int n = it->n_tokens, t = it->n_past + n;
        if (s->logit_row >= 0) {
            ggml_backend_tensor_get(sg->logits, it->logits, (size_t) s->logit_row * sg->logits->nb[1],
                                    sizeof(float) * (size_t) V);
        }
        if (s->traced) {
            /* the newest query's row, for every head: [t, n, H] at row n−1 */
            const struct ggml_tensor * p = s->traced;
            for (int h = 0; h < H; h++) {
                ggml_backend_tensor_get(p, it->attn_row + (size_t) h * t,
                                        (size_t) h * p->nb[2] + (size_t) (n - 1) * p->nb[1],
                                        sizeof(float) * (size_t) t);
            }
        }
        if (s->full) {
            const struct ggml_tensor * p = s->full;
            ggml_backend_tensor_get(p, it->full_attn, (size_t) it->full_head * p->nb[2],
                                    sizeof(float) * (size_t) n * (size_t) t);
        }
    }
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
    step_graph sg;
    bool ok = build_step_graph(m, items, n_items, &sg, err, err_len) &&
              alloc_step_graph(m, &sg, err, err_len) &&
              set_step_inputs(&sg, items, n_items, err, err_len) &&
              compute_step_graph(m, &sg, err, err_len);
    if (ok) {
        read_step_outputs(m, &sg, items, n_items);
    }
    free_step_graph(&sg);
    return ok ? 0 : 1;
}
