/* Test harness for the qemu targets (Cortex-M0/M3/M4 with newlib rdimon, rv32imc with
 * picolibc): semihosting gives it the host's files, stdout and exit code.
 *
 * ebnn_harness.h (generated) binds H_RUN, H_INFER, H_FEATURES and the H_* sizes to one
 * model and selects the mode:
 *   H_MODE_RUN     reads inputs from the host file ebnn_in.bin (H_INPUT_BYTES each, until
 *                  EOF) and writes one record per sample to ebnn_out.bin: pred int32,
 *                  scores int32[K], trace (little-endian, as the host harness)
 *   H_MODE_SIZE    an empty region (calibration), then one H_INFER on h_samples[0] with
 *                  the stack painted below: prints "EBNN-STACK <bytes>"
 *   H_MODE_BLOCKS  an empty region, H_FEATURES(b) per hidden block (the model truncated
 *                  after b), then H_RUN without a trace
 * A region is the code between h_bench_start() and h_bench_stop(); the qemu plugin
 * (firmware/qemu/icount_plugin.c) counts the instructions executed in each.
 * "EBNN-HARNESS OK <n>" on stdout and exit code 0 only if every sample ran.
 */
#include <stdint.h>
#include <stdio.h>

#include "ebnn_harness.h"

static uint8_t h_input[H_INPUT_BYTES];
static int32_t h_scores[H_NUM_CLASSES];

#if H_MODE == H_MODE_RUN
static uint8_t h_workspace[H_WORKSPACE_BYTES];
static uint8_t h_trace[H_TRACE_BYTES];

int main(void)
{
    unsigned long n = 0;
    FILE *in = fopen("ebnn_in.bin", "rb");
    FILE *out = fopen("ebnn_out.bin", "wb");
    if (in == NULL || out == NULL) {
        printf("EBNN-HARNESS FAIL cannot open ebnn_in.bin / ebnn_out.bin\n");
        return 2;
    }
    for (;;) {
        int pred;
        int32_t pred32;
        size_t got = fread(h_input, 1, sizeof h_input, in);
        if (got == 0) {
            break;
        }
        if (got != sizeof h_input) {
            printf("EBNN-HARNESS FAIL truncated input at sample %lu\n", n);
            return 3;
        }
        pred = H_RUN(h_input, h_scores, h_workspace, h_trace);
        if (pred < 0 || pred >= H_NUM_CLASSES) {
            printf("EBNN-HARNESS FAIL run returned %d at sample %lu\n", pred, n);
            return 4;
        }
        pred32 = pred;
        if (fwrite(&pred32, sizeof pred32, 1, out) != 1 || fwrite(h_scores, sizeof h_scores, 1, out) != 1 ||
            fwrite(h_trace, 1, sizeof h_trace, out) != sizeof h_trace) {
            printf("EBNN-HARNESS FAIL write error at sample %lu\n", n);
            return 5;
        }
        n++;
    }
    if (fclose(out) != 0) {
        printf("EBNN-HARNESS FAIL cannot close ebnn_out.bin\n");
        return 5;
    }
    fclose(in);
    printf("EBNN-HARNESS OK %lu\n", n);
    return 0;
}

#else /* H_MODE_SIZE, H_MODE_BLOCKS */

/* Region markers: not inlined, and different bodies so that no pass merges them. */
static volatile uint32_t h_marker;
__attribute__((noinline)) void h_bench_start(void);
__attribute__((noinline)) void h_bench_stop(void);
void h_bench_start(void)
{
    h_marker = 1u;
}
void h_bench_stop(void)
{
    h_marker = 2u;
}

static void h_load_sample(void)
{
    size_t i;
    for (i = 0; i < H_INPUT_BYTES; i++) {
        h_input[i] = h_samples[i];
    }
}

#if H_MODE == H_MODE_SIZE
#define H_PAINT 0x5AA5C33Cu
#define H_PAINT_BYTES 8192u /* the window below main's stack pointer that is painted */
extern char end;            /* linker: end of .bss, where the heap starts */

#if defined(__arm__)
#define H_GET_SP(v) __asm__ volatile("mov %0, sp" : "=r"(v))
#elif defined(__riscv)
#define H_GET_SP(v) __asm__ volatile("mv %0, sp" : "=r"(v))
#elif defined(__XTENSA__)
#define H_GET_SP(v) __asm__ volatile("mov %0, a1" : "=r"(v))
#else
#error "unsupported architecture"
#endif

int main(void)
{
    uintptr_t sp, lo, heap;
    volatile uint32_t *p;
    int pred;
    long used;

    h_load_sample();
    h_bench_start();
    h_bench_stop();

    /* Paint the window below this frame, run, and find the deepest overwritten word.
     * Nothing else runs in between (no interrupts), so the difference is the stack of
     * one H_INFER call, its return address included. */
    H_GET_SP(sp);
    sp &= ~(uintptr_t)3u;
    heap = ((uintptr_t)&end + 1024u + 3u) & ~(uintptr_t)3u;
    lo = sp - H_PAINT_BYTES > heap ? sp - H_PAINT_BYTES : heap;
    for (p = (volatile uint32_t *)sp - 1; (uintptr_t)p >= lo; p--) {
        *p = H_PAINT;
    }
    h_bench_start();
    pred = H_INFER(h_input, h_scores);
    h_bench_stop();
    for (p = (volatile uint32_t *)lo; (uintptr_t)p < sp && *p == H_PAINT; p++) {
    }
    used = (uintptr_t)p == lo ? -1L : (long)(sp - (uintptr_t)p);

    if (pred < 0 || pred >= H_NUM_CLASSES) {
        printf("EBNN-HARNESS FAIL run returned %d\n", pred);
        return 4;
    }
    printf("EBNN-STACK %ld\n", used);
    if (used < 0) {
        /* the stack met the static RAM: it needs more than the window (RAM is short on this chip) */
        printf("EBNN-STACK-WINDOW %lu\n", (unsigned long)(sp - lo));
    }
    printf("EBNN-HARNESS OK 1\n");
    return 0;
}

#else /* H_MODE_BLOCKS */
static uint8_t h_workspace[H_WORKSPACE_BYTES];
static uint8_t h_out[H_MAX_BLOCK_BYTES];

int main(void)
{
    int b, pred;
    h_load_sample();
    h_bench_start();
    h_bench_stop();
    for (b = 0; b < H_NUM_HIDDEN; b++) {
        int r;
        h_bench_start();
        r = H_FEATURES(h_input, b, h_out, h_workspace);
        h_bench_stop();
        if (r < 0) {
            printf("EBNN-HARNESS FAIL features(%d) returned %d\n", b, r);
            return 4;
        }
    }
    h_bench_start();
    pred = H_RUN(h_input, h_scores, h_workspace, NULL);
    h_bench_stop();
    if (pred < 0 || pred >= H_NUM_CLASSES) {
        printf("EBNN-HARNESS FAIL run returned %d\n", pred);
        return 4;
    }
    printf("EBNN-HARNESS OK 1\n");
    return 0;
}
#endif
#endif
