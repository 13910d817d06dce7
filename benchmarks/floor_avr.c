/* The XNOR-popcount floor on the ATmega328P: one 784-bit dot product (98 bytes of
 * activations in SRAM against 98 bytes of weights in flash), the popcount by a 256-entry
 * table read in flash (lpm) and then in SRAM (ld), each between the runner's region
 * markers (GPIOR1 = 1 / 2). The loop is plain C compiled with -Os, one byte a turn: what a
 * straightforward byte-wise implementation costs, the yardstick of issue 4. */
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdint.h>

#define N_BYTES 98u

static const uint8_t weights[N_BYTES] PROGMEM = {
    0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f,
    0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13,
    0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66,
    0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e,
    0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5,
    0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f, 0xf0, 0x66, 0x3c, 0xa5, 0x5a, 0x13, 0xc7, 0x2e, 0x91, 0x0f,
    0xf0, 0x66,
};

static const uint8_t table_flash[256] PROGMEM = {
#define B2(n) n, n + 1, n + 1, n + 2
#define B4(n) B2(n), B2(n + 1), B2(n + 1), B2(n + 2)
#define B6(n) B4(n), B4(n + 1), B4(n + 1), B4(n + 2)
    B6(0), B6(1), B6(1), B6(2)
};

static uint8_t table_ram[256];
static uint8_t act[N_BYTES];
volatile int16_t sink;

static void text(const char *s)
{
    while (*s) {
        GPIOR0 = (uint8_t)*s++;
    }
}

static int16_t dot_flash(const uint8_t *a)
{
    uint16_t mism = 0;
    uint8_t i;
    for (i = 0; i < N_BYTES; i++) {
        mism += pgm_read_byte(table_flash + (uint8_t)(a[i] ^ pgm_read_byte(weights + i)));
    }
    return (int16_t)(8 * N_BYTES) - 2 * (int16_t)mism;
}

static int16_t dot_ram(const uint8_t *a)
{
    uint16_t mism = 0;
    uint8_t i;
    for (i = 0; i < N_BYTES; i++) {
        mism += table_ram[(uint8_t)(a[i] ^ pgm_read_byte(weights + i))];
    }
    return (int16_t)(8 * N_BYTES) - 2 * (int16_t)mism;
}

int main(void)
{
    uint16_t i;
    int16_t f, r;
    for (i = 0; i < 256u; i++) {
        table_ram[i] = pgm_read_byte(table_flash + i);
    }
    for (i = 0; i < N_BYTES; i++) {
        act[i] = (uint8_t)(i * 37u + 11u);
    }
    GPIOR1 = 1; /* empty region: the markers' own cost */
    GPIOR1 = 2;
    GPIOR1 = 1;
    f = dot_flash(act);
    GPIOR1 = 2;
    GPIOR1 = 1;
    r = dot_ram(act);
    GPIOR1 = 2;
    sink = f;
    if (f == r) {
        text("EBNN-HARNESS OK 1\n");
    } else {
        text("EBNN-HARNESS FAIL floor\n");
    }
    GPIOR2 = 0;
    for (;;) {
    }
}
