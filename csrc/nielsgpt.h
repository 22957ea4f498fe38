/*
 * nielsgpt.h — the whole C API of the niels-gpt engine.
 *
 * The model is a small byte-level GPT (SPEC §1): pre-norm blocks with
 * LayerNorm, rotary attention and a GELU MLP, and an LM head tied to the token
 * embedding. This library keeps the weights in ggml backend buffers, one KV
 * cache per sequence, and runs one ggml graph per step for a whole batch of
 * sequences. Results (logits, attention probabilities) are copied into buffers
 * the caller owns before ngpt_step returns.
 *
 * Threading: a model and its sequences are used by one thread at a time.
 * Errors: functions that can fail write a message into err (err_len bytes,
 * always NUL-terminated) and return NULL or a non-zero status. Nothing here
 * exits or aborts on bad input that the caller passes in.
 */
#ifndef NIELSGPT_H
#define NIELSGPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Hyper-parameters, as read from the GGUF metadata. */
typedef struct ngpt_hparams {
    int32_t n_vocab;   /* V */
    int32_t n_ctx;     /* T: the window the model sees */
    int32_t n_embd;    /* C */
    int32_t n_layer;   /* L */
    int32_t n_head;    /* H; head size D = C/H, even */
    int32_t n_ff;      /* d_ff */
    float   rope_theta;
    float   norm_eps;  /* LayerNorm epsilon, 1e-5 */
} ngpt_hparams;

/* One weight inside the caller's GGUF bytes, as the caller's own (validated)
 * GGUF parser found it. Dims are in ggml order (ne[0] fastest). */
typedef struct ngpt_tensor_ref {
    char     name[64];
    int32_t  type;     /* ggml type: 0 = F32, 1 = F16 */
    int32_t  n_dims;   /* 1 or 2 */
    int64_t  ne[2];
    uint64_t offset;   /* from the start of the blob */
    uint64_t nbytes;
} ngpt_tensor_ref;

typedef struct ngpt_model ngpt_model;
typedef struct ngpt_seq   ngpt_seq;

/* Load a model: hparams plus every tensor the architecture needs, copied from
 * blob into the device's buffers (the blob may be freed afterwards).
 * device: "cpu", or "metal"/"mps"/"gpu" for the first GPU backend ggml has.
 * n_threads: CPU threads in the persistent threadpool (>= 1). */
ngpt_model * ngpt_model_load(const ngpt_hparams * hp,
                             const void * blob, size_t blob_len,
                             const ngpt_tensor_ref * refs, int n_refs,
                             const char * device, int n_threads,
                             char * err, size_t err_len);
void         ngpt_model_free(ngpt_model * model);
/* The backend's name, e.g. "CPU" or "Metal". */
const char * ngpt_model_backend(const ngpt_model * model);

/* A sequence owns a KV cache for up to capacity positions (1..n_ctx). */
ngpt_seq * ngpt_seq_new(ngpt_model * model, int capacity, char * err, size_t err_len);
/* Grow a sequence's cache to capacity positions (never shrinks), keeping the
 * first n_keep. Caches start small and grow as the sequence does, so memory
 * follows the tokens actually held rather than the most a request may take. */
int        ngpt_seq_grow(ngpt_seq * seq, int capacity, int n_keep, char * err, size_t err_len);
void       ngpt_seq_free(ngpt_seq * seq);

/* One sequence's share of a step: n_tokens tokens placed at positions
 * n_past .. n_past+n_tokens-1 of its cache, attending to the n_past tokens
 * already cached and to each other (causally). t = n_past + n_tokens. */
typedef struct ngpt_item {
    ngpt_seq      * seq;
    const int32_t * tokens;       /* [n_tokens] token ids in [0, n_vocab) */
    int32_t         n_tokens;
    int32_t         n_past;
    float         * logits;       /* [n_vocab]: last token's logits, or NULL */
    int32_t         trace_layer;  /* -1, or a layer whose last-row probabilities... */
    float         * attn_row;     /* ...are copied here: [n_head][t] */
    int32_t         full_layer;   /* -1, or a layer and head whose probabilities... */
    int32_t         full_head;
    float         * full_attn;    /* ...are copied here: [n_tokens][t] */
} ngpt_item;

/* Run one graph over all items (each sequence at most once). Returns 0, or
 * non-zero with a message in err; a failed step leaves caches unchanged for
 * the positions it would have written only in the sense that the caller must
 * treat those positions as unwritten. */
int ngpt_step(ngpt_model * model, const ngpt_item * items, int n_items, char * err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* NIELSGPT_H */
