/*
 * testutil.h — what the C tests share: checks that count failures instead of
 * stopping, a fixture GGUF turned into the arguments ngpt_model_load takes,
 * and the numbers of a golden JSON file.
 *
 * The fixtures are trusted (converted from testdata/models by the nielsgpt
 * binary in a CTest setup step), so they are read with ggml's own GGUF
 * parser; the engine never is, since ggml's checks abort on bad input.
 */
#ifndef NIELSGPT_TESTUTIL_H
#define NIELSGPT_TESTUTIL_H

#include "nielsgpt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

extern int test_failures;

/* Record a failure with its place and a message, and go on. */
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            test_failures++;                                              \
        }                                                                 \
    } while (0)

/* Stop the test program: what follows cannot run. */
void die(const char * fmt, ...);

/* A model file as ngpt_model_load wants it. */
typedef struct fixture {
    ngpt_hparams      hp;
    ngpt_tensor_ref * refs;
    int               n_refs;
    void            * blob;      /* the whole file */
    size_t            blob_len;
} fixture;

fixture load_fixture(const char * gguf_path);
void    free_fixture(fixture * f);
/* Blocks of the KV pool one sequence of n_ctx positions takes. */
int64_t      window_blocks(const ngpt_hparams * hp);
/* The model with a KV pool of kv_blocks, or die: a test of its outputs
 * cannot start without one. */
ngpt_model * load_model(const fixture * f, const char * device, int64_t kv_blocks);
/* A sequence of capacity positions, or die. */
ngpt_seq *   new_seq(ngpt_model * m, int capacity);

/* A golden file of scripts/make_fixtures.py, as text. */
char * read_golden(const char * path);
/* The numbers of the array (or the one number) under "section" then "key",
 * flattened in file order; *n gets their count. The golden files name each
 * section once and each key once within its section, so finding the key
 * after its section finds the right one. Dies when it is missing. */
double * golden_numbers(const char * text, const char * section, const char * key, size_t * n);
/* One integer under "section" then "key". */
int golden_int(const char * text, const char * section, const char * key);

/* max |a[i] - b[i]| over n values */
double max_abs_diff(const float * a, const double * b, size_t n);

#endif /* NIELSGPT_TESTUTIL_H */
