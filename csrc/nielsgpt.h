/*
 * nielsgpt.h — the whole C API of the niels-gpt engine.
 *
 * The model is a small GPT (docs/ARCHITECTURE.md): pre-norm blocks with
 * rotary attention and an MLP, and an LM head tied to the token embedding.
 * Two generations share the graph and differ in their norm and MLP kinds
 * (see ngpt_hparams): generation 1 is byte-level with LayerNorm and a GELU
 * MLP, generation 2 has RMSNorm and a SwiGLU MLP over a SentencePiece
 * vocabulary (the ids are the caller's business either way). This library keeps the weights in ggml backend buffers and
 * every sequence's KV cache in one pool of fixed-size blocks that the model
 * owns, and runs one ggml graph per step for a whole batch of sequences.
 * Results (logits, attention probabilities) are copied into buffers the
 * caller owns before ngpt_step returns.
 *
 * Ownership: the caller owns every pointer it passes in; the library reads or
 * writes them only during the call and keeps none. Models and sequences are
 * the library's, and the caller gives each back with its _free function.
 * Threading: a model and its sequences are used by one thread at a time;
 * ngpt_backends_load runs before any model is loaded, on one thread.
 * Errors: functions that can fail write a message into err (err_len bytes,
 * always NUL-terminated; err may be NULL) and return NULL or a non-zero
 * status (NGPT_ERROR, or NGPT_KV_FULL where the pool is the reason). Nothing
 * here exits or aborts on bad input that the caller passes in.
 * Handles: models and sequences carry a magic number that every function
 * checks and that freeing clears, so a NULL, foreign or freed handle is
 * refused with an error. A freed handle is still the caller's bug: its
 * memory may have been reused, and only under AddressSanitizer is a second
 * free or a use after free caught every time.
 */
#ifndef NIELSGPT_H
#define NIELSGPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NGPT_OK      0
#define NGPT_ERROR   1
#define NGPT_KV_FULL 2  /* the KV pool has no room now; it may have later */

/* Positions per KV block: the pool's unit of allocation. */
#define NGPT_KV_BLOCK 32

/* Norm kinds (ngpt_hparams.norm_type), used by every norm of a model (ln1,
 * ln2, ln_f). The zero value is generation 1's, so a caller that does not
 * set the field gets the model it always got. */
#define NGPT_NORM_LAYER 0  /* LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias */
#define NGPT_NORM_RMS   1  /* RMSNorm: x / sqrt(mean(x²) + eps) * weight; no bias */

/* MLP kinds (ngpt_hparams.mlp_type); zero is generation 1's. Tensor names
 * per block, in GGUF:
 *   GELU:   ffn_up (fc1), ffn_down (fc2), each a weight and a bias;
 *   SwiGLU: ffn_gate (fc_g), ffn_up (fc_a), ffn_down (fc_out), each a weight
 *           and a bias: ffn_down(silu(ffn_gate(x)) * ffn_up(x)). */
#define NGPT_MLP_GELU   0  /* fc2(GELU(fc1(x))), GELU in its exact erf form */
#define NGPT_MLP_SWIGLU 1

/* How the KV pool stores keys and values. F32 is exact: the model computes
 * as PyTorch does. F16 halves the pool (memory, and what attention reads)
 * and rounds every cached key and value to half precision: an opt-in trade,
 * measured in docs/BENCHMARKS.md. */
#define NGPT_KV_F32 0
#define NGPT_KV_F16 1

/* Hyper-parameters, as read from the GGUF metadata, and how to keep the cache. */
typedef struct ngpt_hparams {
    int32_t n_vocab;   /* V */
    int32_t n_ctx;     /* T: the window the model sees */
    int32_t n_embd;    /* C */
    int32_t n_layer;   /* L */
    int32_t n_head;    /* H; head size D = C/H, even */
    int32_t n_ff;      /* d_ff */
    float   rope_theta;
    float   norm_eps;  /* every norm's epsilon, 1e-5 */
    int32_t norm_type; /* NGPT_NORM_LAYER or NGPT_NORM_RMS */
    int32_t mlp_type;  /* NGPT_MLP_GELU or NGPT_MLP_SWIGLU */
    int32_t kv_type;   /* NGPT_KV_F32 or NGPT_KV_F16: not from the file, the caller's choice */
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

/* Load ggml backend modules from the folder dir into ggml's process-wide
 * registry (the files a CMake build with NIELSGPT_BACKEND_DL writes: the best
 * libggml-cpu-*.so variant this CPU runs, libggml-cuda.so, ...; see
 * docs/ARCHITECTURE.md §7). From then on a device from a module is chosen
 * over a built-in one of its kind (a CPU module over the CPU backend compiled
 * into the program). Loading the same folder again does nothing.
 * Returns 0, or non-zero with a message in err when dir is not a folder or no
 * module in it loads on this machine. */
int ngpt_backends_load(const char * dir, char * err, size_t err_len);

/* Load a model: hparams plus every tensor the architecture needs, copied from
 * blob into the device's buffers (the blob and refs may be freed afterwards).
 * refs must name exactly the architecture's tensors, which the norm and MLP
 * kinds decide (an RMSNorm has no .bias; a SwiGLU block has ffn_gate);
 * vectors (norm weights, biases) must be F32, matrices F32 or F16. Nothing in blob is trusted: every
 * ref is checked against blob_len before ggml sees it.
 * device: "cpu", "cuda", "metal" (or "mps"), or "gpu" for the first GPU ggml
 * has; a device from a loaded module before a built-in one.
 * n_threads: the most CPU threads a step uses (1..512): decode steps run on
 * the calling thread alone, steps with long prompt chunks on every thread
 * while that measures faster.
 * kv_blocks: blocks in the KV pool (see ngpt_kv_block_bytes); at least enough
 * for one sequence of n_ctx positions. The pool's memory is reserved once
 * and taken from the OS as blocks are first used; it is never given back
 * while the model lives.
 * Returns the model, or NULL with a message in err. */
ngpt_model * ngpt_model_load(const ngpt_hparams * hp,
                             const void * blob, size_t blob_len,
                             const ngpt_tensor_ref * refs, int n_refs,
                             const char * device, int n_threads, int64_t kv_blocks,
                             char * err, size_t err_len);
/* Free a model and everything it holds on the device. Returns 0; NULL is a
 * no-op. Returns non-zero and frees nothing when the handle is not a live
 * model, or while sequences of it are alive: their caches live on its
 * device, so they are freed first. */
int          ngpt_model_free(ngpt_model * model);
/* The backend's name, and the module it came from when it was loaded from
 * one: "CPU", "CPU (libggml-cpu-icelake.so)", "CUDA0 (libggml-cuda.so)".
 * "" for a handle that is not a live model. Valid while the model is. */
const char * ngpt_model_backend(const ngpt_model * model);

/* Bytes of one KV block (NGPT_KV_BLOCK positions, keys and values of every
 * layer), so the caller can size the pool; 0 when hp is NULL or its
 * hyper-parameters are ones ngpt_model_load refuses. */
size_t ngpt_kv_block_bytes(const ngpt_hparams * hp);

/* The pool's size and what is free now, in blocks; both 0 for a handle that
 * is not a live model. stats NULL is a no-op. */
typedef struct ngpt_kv_stats {
    int64_t blocks;
    int64_t free_blocks;
} ngpt_kv_stats;
void ngpt_kv_stats_get(const ngpt_model * model, ngpt_kv_stats * stats);

/* A sequence holds a KV cache for up to capacity positions (1..n_ctx): the
 * blocks for all of them are taken from the pool now, so a sequence never
 * grows, never copies its cache and never finds the pool full later. Its
 * contents start undefined. On success *seq is the sequence and the result
 * NGPT_OK; NGPT_KV_FULL when the pool has no room for it now (freeing other
 * sequences makes room); NGPT_ERROR otherwise (seq NULL, not a live model,
 * capacity out of range), with a message in err. *seq is NULL on failure. */
int ngpt_seq_new(ngpt_model * model, int capacity, ngpt_seq ** seq, char * err, size_t err_len);
/* Free a sequence: its blocks go back to the pool. Returns 0; NULL is a
 * no-op. Returns non-zero and frees nothing when the handle is not a live
 * sequence. */
int ngpt_seq_free(ngpt_seq * seq);

/* One sequence's share of a step: n_tokens tokens placed at positions
 * n_past .. n_past+n_tokens-1 of its cache, attending to the n_past tokens
 * already cached and to each other (causally). t = n_past + n_tokens.
 * Every output is optional: a zeroed item (but for seq, tokens, n_tokens
 * and n_past) asks for nothing and only fills the cache. Layer lists hold
 * distinct layers in [0, n_layer), in any order; outputs follow that order.
 * All buffers are the caller's, read or written only during ngpt_step. */
typedef struct ngpt_item {
    ngpt_seq      * seq;
    const int32_t * tokens;       /* [n_tokens] token ids in [0, n_vocab) */
    int32_t         n_tokens;
    int32_t         n_past;
    float         * logits;       /* [n_vocab]: the last token's logits, or NULL */
    float         * all_logits;   /* [n_tokens][n_vocab]: every new token's logits, or NULL */
    /* The newest query row of every head, for each of n_trace layers
     * (0..n_layer): attn_rows[k][h][0..t) is head h of trace_layers[k]. */
    int32_t         n_trace;
    const int32_t * trace_layers; /* [n_trace] */
    float         * attn_rows;    /* [n_trace][n_head][t] */
    /* Every new query's row of every head, for each of n_full layers:
     * full_attn[k][h][r][0..t) is query n_past + r of head h of full_layers[k]. */
    int32_t         n_full;
    const int32_t * full_layers;  /* [n_full] */
    float         * full_attn;    /* [n_full][n_head][n_tokens][t] */
    /* The logit lens at the last token: lens[l] = LN_f(h_l) · tok_embᵀ, h_l
     * the residual stream after block l; lens[n_layer - 1] equals the
     * logits. Needs logits or all_logits. */
    float         * lens;         /* [n_layer][n_vocab], or NULL */
    /* Per head, 1 keeps its attention output and 0 ablates it: probs · v of
     * that head is zero before the projection, for every new token. The
     * traced probabilities are still its softmax. NULL keeps every head;
     * other values than 0 and 1 are refused. */
    const float   * head_mask;    /* [n_layer][n_head], or NULL */
} ngpt_item;

/* How many step graphs the model has built: a step of a shape it has kept
 * (see ngpt_step) builds none. 0 for a handle that is not a live model. */
uint64_t ngpt_graphs_built(const ngpt_model * model);

/* Run one forward pass over all items (each sequence at most once): write
 * every item's new keys and values into its cache and fill the outputs it
 * asked for. The graph of a step is kept and run again for later steps of
 * the same shape (each item's sequence, token count, n_past + n_tokens
 * rounded up to 32, and which kinds of output it asks for: logits, all
 * logits, attention of any layers, the lens, a head mask; not which layers
 * or heads, nor the mask's values); once the model has seen a shape, this library
 * allocates nothing for a step (ggml's CPU compute still makes and frees one
 * small context per call, in ggml_cpu_init). Returns 0, or non-zero with a message in err. On failure no
 * output buffer has been written, and each item's cache positions n_past ..
 * n_past+n_tokens-1 hold unspecified values (earlier positions are never
 * touched): the caller treats them as unwritten, e.g. by retrying from the
 * same n_past. */
int ngpt_step(ngpt_model * model, const ngpt_item * items, int n_items, char * err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* NIELSGPT_H */
