/* libFuzzer harness for the generated inference function (built by fuzz/build.py).
 *
 * fuzz input -> one uint8 image (zero-padded or cut to FZ_INPUT_BYTES) -> the
 * model's NAME_run, with ASan + UBSan. Every buffer is heap-allocated to its
 * exact documented size, so one byte written or read past it is reported.
 *
 * Invariants checked on every input (abort() on a violation):
 *  1. NAME_run returns a class in [0, NUM_CLASSES) and it is the arg max of the
 *     scores, the lowest index on ties;
 *  2. every score and every trace byte is written: a second call, with the
 *     outputs and the workspace pre-filled with other garbage, gives the same
 *     bytes (deterministic, nothing of an earlier call survives);
 *  3. the input is not modified;
 *  4. the reference kernels (NAME_ref_run, per-bit loops) compute the same
 *     prediction, scores and trace as the fast kernels;
 *  5. NAME_infer (static workspace) agrees with NAME_run;
 *  6. NAME_features(block b) returns the block's byte count and the bytes of
 *     the trace for that block; bad arguments give the documented error codes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_model.h" /* written by fuzz/build.py: FZ_* names of the model */

#define CHECK(cond, what)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "fuzz_infer: invariant violated: %s\n", what); \
            abort();                                                        \
        }                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *exact(size_t n, uint8_t fill)
{
    uint8_t *p = (uint8_t *)malloc(n == 0 ? 1 : n);
    CHECK(p != NULL, "out of memory");
    memset(p, fill, n);
    return p;
}

static void garbage(uint8_t *p, size_t n, const uint8_t *data, size_t size, uint8_t salt)
{
    size_t i;
    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)((size ? data[i % size] : 0u) ^ salt ^ (uint8_t)(i * 131u));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *input = exact(FZ_INPUT_BYTES, 0);
    uint8_t *input_copy = exact(FZ_INPUT_BYTES, 0);
    int32_t *scores = (int32_t *)exact(sizeof(int32_t) * FZ_NUM_CLASSES, 0xA5);
    int32_t *scores2 = (int32_t *)exact(sizeof(int32_t) * FZ_NUM_CLASSES, 0x5A);
    uint8_t *workspace = exact(FZ_WORKSPACE_BYTES, 0);
    uint8_t *trace = exact(FZ_TRACE_BYTES, 0xA5);
    uint8_t *trace2 = exact(FZ_TRACE_BYTES, 0x5A);
    int pred, pred2, k, b;
    size_t off;

    memcpy(input, data, size < FZ_INPUT_BYTES ? size : FZ_INPUT_BYTES);
    memcpy(input_copy, input, FZ_INPUT_BYTES);

    /* 1. a class in range, the arg max of the scores (lowest index on ties) */
    garbage(workspace, FZ_WORKSPACE_BYTES, data, size, 0x00);
    pred = fz_run(input, scores, workspace, trace);
    CHECK(pred >= 0 && pred < FZ_NUM_CLASSES, "run returned a class out of range");
    for (k = 0; k < FZ_NUM_CLASSES; k++) {
        CHECK(scores[k] < scores[pred] || (scores[k] == scores[pred] && k >= pred), "prediction is not the arg max");
    }
    /* 3. the input is const */
    CHECK(memcmp(input, input_copy, FZ_INPUT_BYTES) == 0, "run modified its input");

    /* 2. all outputs written, deterministic, independent of the workspace's old content */
    garbage(workspace, FZ_WORKSPACE_BYTES, data, size, 0xFF);
    pred2 = fz_run(input, scores2, workspace, trace2);
    CHECK(pred2 == pred, "second call: another prediction");
    CHECK(memcmp(scores, scores2, sizeof(int32_t) * FZ_NUM_CLASSES) == 0, "second call: other scores (or unwritten)");
    CHECK(memcmp(trace, trace2, FZ_TRACE_BYTES) == 0, "second call: another trace (or unwritten bytes)");

    /* 4. reference kernels == fast kernels, bit for bit */
    memset(scores2, 0x33, sizeof(int32_t) * FZ_NUM_CLASSES);
    memset(trace2, 0x33, FZ_TRACE_BYTES);
    garbage(workspace, FZ_WORKSPACE_BYTES, data, size, 0x77);
    pred2 = fz_ref_run(input, scores2, workspace, trace2);
    CHECK(pred2 == pred, "reference kernels: another prediction");
    CHECK(memcmp(scores, scores2, sizeof(int32_t) * FZ_NUM_CLASSES) == 0, "reference kernels: other scores");
    CHECK(memcmp(trace, trace2, FZ_TRACE_BYTES) == 0, "reference kernels: another trace");

    /* 5. the static-workspace entry point */
    memset(scores2, 0x11, sizeof(int32_t) * FZ_NUM_CLASSES);
    pred2 = fz_infer(input, scores2);
    CHECK(pred2 == pred, "infer: another prediction");
    CHECK(memcmp(scores, scores2, sizeof(int32_t) * FZ_NUM_CLASSES) == 0, "infer: other scores");

    /* 6. features of every hidden block == its slice of the trace */
    off = 0;
    for (b = 0; b < FZ_NUM_HIDDEN; b++) {
        size_t n = (size_t)fz_block_bytes[b];
        uint8_t *out = exact(n, 0xEE);
        garbage(workspace, FZ_WORKSPACE_BYTES, data, size, (uint8_t)b);
        CHECK(fz_features(input, b, out, workspace) == (int)n, "features: wrong byte count");
        CHECK(memcmp(out, trace + off, n) == 0, "features: bytes differ from the trace");
        off += n;
        free(out);
    }
    CHECK(off == FZ_TRACE_BYTES, "trace size is not the sum of the block sizes");
    CHECK(fz_features(input, -1, trace2, workspace) == EBNN_ERR_BLOCK, "features(-1): no EBNN_ERR_BLOCK");
    CHECK(fz_features(input, FZ_NUM_HIDDEN, trace2, workspace) == EBNN_ERR_BLOCK, "features(N): no EBNN_ERR_BLOCK");
    CHECK(fz_run(NULL, scores2, workspace, NULL) == EBNN_ERR_NULL, "run(NULL input): no EBNN_ERR_NULL");
    CHECK(fz_run(input, NULL, workspace, NULL) == EBNN_ERR_NULL, "run(NULL scores): no EBNN_ERR_NULL");
    CHECK(fz_run(input, scores2, NULL, NULL) == EBNN_ERR_NULL, "run(NULL workspace): no EBNN_ERR_NULL");

    free(input);
    free(input_copy);
    free(scores);
    free(scores2);
    free(workspace);
    free(trace);
    free(trace2);
    return 0;
}
