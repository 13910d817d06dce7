/* Test harness for the ATmega328P, run by firmware/avr/simavr_runner.c.
 *
 * ebnn_harness.h (generated) binds H_RUN, H_INFER, H_FEATURES and the H_* sizes to one
 * model and selects the mode; h_samples (generated, in flash: the Uno has 2 KB of SRAM)
 * holds H_NUM_SAMPLES inputs, copied one at a time into SRAM.
 *
 * Channels (registers the runner hooks):
 *   UART0 TX, 2 Mbaud  binary records, little-endian: pred int32, scores int32[K], trace
 *   GPIOR0             text for the runner's stderr: "EBNN-HARNESS OK <n>" only if every
 *                      sample ran, or "EBNN-HARNESS FAIL ..."
 *   GPIOR1             1 / 2 = start / stop of a measured region (cycles, stack)
 *   GPIOR2             exit code; the runner stops
 * Modes:
 *   H_MODE_RUN     every sample through H_RUN with a trace, one record each
 *   H_MODE_SIZE    an empty region (calibration), then one H_INFER: the model as an
 *                  application links it (its static workspace included)
 *   H_MODE_BLOCKS  an empty region, H_FEATURES(b) for every hidden block b (the model
 *                  truncated after b), then H_RUN without a trace
 */
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdint.h>
#include <string.h>

#include "ebnn_harness.h"

static uint8_t h_input[H_INPUT_BYTES];
static int32_t h_scores[H_NUM_CLASSES];
#if H_MODE == H_MODE_RUN
static uint8_t h_workspace[H_WORKSPACE_BYTES];
static uint8_t h_trace[H_TRACE_BYTES];
#elif H_MODE == H_MODE_BLOCKS
static uint8_t h_workspace[H_WORKSPACE_BYTES];
static uint8_t h_out[H_MAX_BLOCK_BYTES];
#endif
static uint8_t h_sent;

static void h_uart_init(void)
{
    UBRR0 = 0; /* 2 Mbaud at 16 MHz with U2X0 */
    UCSR0A = (uint8_t)_BV(U2X0);
    UCSR0B = (uint8_t)_BV(TXEN0);
    UCSR0C = (uint8_t)(_BV(UCSZ01) | _BV(UCSZ00));
}

#if H_MODE == H_MODE_RUN
static void h_put_bytes(const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    while (n--) {
        loop_until_bit_is_set(UCSR0A, UDRE0);
        UCSR0A = (uint8_t)(UCSR0A | _BV(TXC0)); /* clear "transmit complete" */
        UDR0 = *p++;
        h_sent = 1;
    }
}
#endif

static void h_text(const char *s)
{
    while (*s) {
        GPIOR0 = (uint8_t)*s++;
    }
}

static void h_number(long v)
{
    char buf[12];
    uint8_t n = 0;
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    if (v < 0) {
        GPIOR0 = '-';
    }
    do {
        buf[n++] = (char)('0' + (char)(u % 10u));
        u /= 10u;
    } while (u);
    while (n) {
        GPIOR0 = (uint8_t)buf[--n];
    }
}

static void h_exit(uint8_t code)
{
    if (h_sent) {
        loop_until_bit_is_set(UCSR0A, TXC0); /* the last byte has left the UART */
    }
    GPIOR2 = code;
    for (;;) {
    }
}

static void h_fail(const char *what, long value, long sample, uint8_t code)
{
    h_text("EBNN-HARNESS FAIL ");
    h_text(what);
    h_number(value);
    h_text(" at sample ");
    h_number(sample);
    h_text("\n");
    h_exit(code);
}

int main(void)
{
    int pred;
    h_uart_init();
#if H_MODE == H_MODE_RUN
    {
        uint16_t i;
        for (i = 0; i < H_NUM_SAMPLES; i++) {
            int32_t pred32;
            memcpy_P(h_input, h_samples + (size_t)i * H_INPUT_BYTES, H_INPUT_BYTES);
            pred = H_RUN(h_input, h_scores, h_workspace, h_trace);
            if (pred < 0 || pred >= H_NUM_CLASSES) {
                h_fail("run returned ", pred, (long)i, 4);
            }
            pred32 = pred;
            h_put_bytes(&pred32, sizeof pred32);
            h_put_bytes(h_scores, sizeof h_scores);
            h_put_bytes(h_trace, sizeof h_trace);
        }
        h_text("EBNN-HARNESS OK ");
        h_number((long)i);
        h_text("\n");
    }
#else
    memcpy_P(h_input, h_samples, H_INPUT_BYTES);
    GPIOR1 = 1; /* empty region: the markers' own cost */
    GPIOR1 = 2;
#if H_MODE == H_MODE_SIZE
    GPIOR1 = 1;
    pred = H_INFER(h_input, h_scores);
    GPIOR1 = 2;
#else
    {
        int b;
        for (b = 0; b < H_NUM_HIDDEN; b++) {
            int r;
            GPIOR1 = 1;
            r = H_FEATURES(h_input, b, h_out, h_workspace);
            GPIOR1 = 2;
            if (r < 0) {
                h_fail("features returned ", r, 0, 4);
            }
        }
    }
    GPIOR1 = 1;
    pred = H_RUN(h_input, h_scores, h_workspace, NULL);
    GPIOR1 = 2;
#endif
    if (pred < 0 || pred >= H_NUM_CLASSES) {
        h_fail("run returned ", pred, 0, 4);
    }
    h_text("EBNN-HARNESS OK 1\n");
#endif
    h_exit(0);
    return 0;
}
