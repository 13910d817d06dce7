/* Kernel experiments for the lx106 (Xtensa, ESP8266): executed instructions of inner-loop
 * variants, each between h_bench_start/h_bench_stop (the qemu plugin counts each region).
 * Run with `python benchmarks/kernels_lx106.py [TARGET ...]` (default xtensa-lx106 rv32imc
 * cortex-m3), which prints instructions per item: per bit (binary MAC), pixel or division.
 *   swar3 .. table_byte   popcount of the XOR of two 800-bit vectors (25 words)
 *   u8_*                  the 8-bit first layer: 784 pixels times +-1 weights (bits)
 *   lin_two / lin_one     a 16-row x 800-bit binary linear layer, two rows a pass sharing the
 *                         activation loads (as the fast kernels do) or one row a pass
 *   div3_call / div3_mul  n / 3u: a __udivsi3 call on the lx106 (no MULUH) or multiply-shift
 * Every variant's result is printed; the runner checks that they agree. */
#include <stdint.h>
#include <stdio.h>

#define NW 25
static uint32_t A[NW], W[NW];
static uint8_t PIX[784], WB[98];
static volatile uint32_t h_marker;
static volatile uint32_t sink;
__attribute__((noinline)) void h_bench_start(void);
__attribute__((noinline)) void h_bench_stop(void);
void h_bench_start(void) { h_marker = 1u; }
void h_bench_stop(void) { h_marker = 2u; }

static const uint8_t T8[256] = {
#define B2(n) n, n + 1, n + 1, n + 2
#define B4(n) B2(n), B2(n + 1), B2(n + 1), B2(n + 2)
#define B6(n) B4(n), B4(n + 1), B4(n + 1), B4(n + 2)
    B6(0), B6(1), B6(1), B6(2)};

#define M1 0x55555555u
#define M2 0x33333333u
#define M4 0x0f0f0f0fu
#define M8 0x00ff00ffu

/* 1: the fast kernels' scheme: 3 words folded to byte lanes, lanes summed once */
__attribute__((noinline)) static uint32_t swar3(const uint32_t *a, const uint32_t *w, uint32_t n)
{
    uint32_t lanes = 0, i;
    for (i = 0; i + 3u <= n; i += 3u) {
        uint32_t x = a[i] ^ w[i], y = a[i + 1] ^ w[i + 1], z = a[i + 2] ^ w[i + 2];
        x = x - ((x >> 1) & M1);
        y = y - ((y >> 1) & M1);
        z = z - ((z >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2) + (y & M2) + ((y >> 2) & M2) + (z & M2) + ((z >> 2) & M2);
        lanes += (x & M4) + ((x >> 4) & M4);
    }
    for (; i < n; i++) {
        uint32_t x = a[i] ^ w[i];
        x = x - ((x >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2);
        lanes += (x & M4) + ((x >> 4) & M4);
    }
    lanes = (lanes & M8) + ((lanes >> 8) & M8);
    return (lanes + (lanes >> 16)) & 0xffffu;
}

/* 2: same folding, lanes summed with one multiply (lx106 has MULL) */
__attribute__((noinline)) static uint32_t swar3_mul(const uint32_t *a, const uint32_t *w, uint32_t n)
{
    uint32_t lanes = 0, i;
    for (i = 0; i + 3u <= n; i += 3u) {
        uint32_t x = a[i] ^ w[i], y = a[i + 1] ^ w[i + 1], z = a[i + 2] ^ w[i + 2];
        x = x - ((x >> 1) & M1);
        y = y - ((y >> 1) & M1);
        z = z - ((z >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2) + (y & M2) + ((y >> 2) & M2) + (z & M2) + ((z >> 2) & M2);
        lanes += (x & M4) + ((x >> 4) & M4);
    }
    for (; i < n; i++) {
        uint32_t x = a[i] ^ w[i];
        x = x - ((x >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2);
        lanes += (x & M4) + ((x >> 4) & M4);
    }
    /* lanes <= 232 each: 16-bit pairs first, then a multiply sums the two halves */
    lanes = (lanes & M8) + ((lanes >> 8) & M8);
    return (lanes * 0x00010001u) >> 16;
}

/* 3: one word at a time, the classic multiply finish */
__attribute__((noinline)) static uint32_t swar1_mul(const uint32_t *a, const uint32_t *w, uint32_t n)
{
    uint32_t s = 0, i;
    for (i = 0; i < n; i++) {
        uint32_t x = a[i] ^ w[i];
        x = x - ((x >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2);
        x = (x + (x >> 4)) & M4;
        s += (x * 0x01010101u) >> 24;
    }
    return s;
}

/* 4: byte table, bytes of the XOR word taken with extui (one instruction each) */
__attribute__((noinline)) static uint32_t table_word(const uint32_t *a, const uint32_t *w, uint32_t n)
{
    uint32_t s = 0, i;
    for (i = 0; i < n; i++) {
        uint32_t x = a[i] ^ w[i];
        s += (uint32_t)T8[x & 0xffu] + T8[(x >> 8) & 0xffu] + T8[(x >> 16) & 0xffu] + T8[x >> 24];
    }
    return s;
}

/* 5: byte table, byte loads (the kernels' tail loop) */
__attribute__((noinline)) static uint32_t table_byte(const uint8_t *a, const uint8_t *w, uint32_t n)
{
    uint32_t s = 0, i;
    for (i = 0; i < n; i++) {
        s += T8[(uint8_t)(a[i] ^ w[i])];
    }
    return s;
}

/* 6: SWAR on 16-bit lanes per word pair (fewer masks: no 4-bit stage for the pair) */
__attribute__((noinline)) static uint32_t swar6(const uint32_t *a, const uint32_t *w, uint32_t n)
{
    uint32_t lanes = 0, i;
    for (i = 0; i + 6u <= n; i += 6u) {
        uint32_t x0 = a[i] ^ w[i], x1 = a[i + 1] ^ w[i + 1], x2 = a[i + 2] ^ w[i + 2];
        uint32_t x3 = a[i + 3] ^ w[i + 3], x4 = a[i + 4] ^ w[i + 4], x5 = a[i + 5] ^ w[i + 5];
        uint32_t p, q;
        x0 -= (x0 >> 1) & M1;
        x1 -= (x1 >> 1) & M1;
        x2 -= (x2 >> 1) & M1;
        x3 -= (x3 >> 1) & M1;
        x4 -= (x4 >> 1) & M1;
        x5 -= (x5 >> 1) & M1;
        p = (x0 & M2) + ((x0 >> 2) & M2) + (x1 & M2) + ((x1 >> 2) & M2) + (x2 & M2) + ((x2 >> 2) & M2);
        q = (x3 & M2) + ((x3 >> 2) & M2) + (x4 & M2) + ((x4 >> 2) & M2) + (x5 & M2) + ((x5 >> 2) & M2);
        lanes += (p & M4) + ((p >> 4) & M4) + (q & M4) + ((q >> 4) & M4);
    }
    for (; i < n; i++) {
        uint32_t x = a[i] ^ w[i];
        x = x - ((x >> 1) & M1);
        x = (x & M2) + ((x >> 2) & M2);
        lanes += (x & M4) + ((x >> 4) & M4);
    }
    lanes = (lanes & M8) + ((lanes >> 8) & M8);
    return (lanes * 0x00010001u) >> 16;
}

/* first layer: 784 pixels times +-1 weights (bits), three ways to test the bit */
__attribute__((noinline)) static int32_t u8_varshift(const uint8_t *v, const uint8_t *w, uint32_t n)
{
    int32_t acc = 0;
    uint32_t k;
    for (k = 0; k < n; k++) {
        acc += ((w[k >> 3] >> (k & 7u)) & 1u) ? (int32_t)v[k] : -(int32_t)v[k];
    }
    return acc;
}

__attribute__((noinline)) static int32_t u8_shiftreg(const uint8_t *v, const uint8_t *w, uint32_t n)
{
    int32_t acc = 0;
    uint32_t k, bits = 0;
    for (k = 0; k < n; k++) {
        if ((k & 7u) == 0u) {
            bits = w[k >> 3];
        }
        acc += (bits & 1u) ? (int32_t)v[k] : -(int32_t)v[k];
        bits >>= 1;
    }
    return acc;
}

/* sum of the pixels whose bit is set, doubled, minus the sum of all: no negation per tap,
 * and 8 taps per weight byte unrolled (fixed bit positions: extui / bbsi, no SAR) */
__attribute__((noinline)) static int32_t u8_bytes(const uint8_t *v, const uint8_t *w, uint32_t n)
{
    int32_t pos = 0, all = 0;
    uint32_t k;
    for (k = 0; k + 8u <= n; k += 8u, v += 8) {
        uint32_t b = w[k >> 3];
        int32_t s = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        all += s;
        pos += (b & 1u) ? v[0] : 0;
        pos += (b & 2u) ? v[1] : 0;
        pos += (b & 4u) ? v[2] : 0;
        pos += (b & 8u) ? v[3] : 0;
        pos += (b & 16u) ? v[4] : 0;
        pos += (b & 32u) ? v[5] : 0;
        pos += (b & 64u) ? v[6] : 0;
        pos += (b & 128u) ? v[7] : 0;
    }
    return 2 * pos - all;
}


/* blinear as the fast kernels do it (two rows a pass sharing the activation loads) against one
 * row a pass, 16 rows x 25 words; returns the sum of the mismatch counts */
#define ROWS 16
static uint32_t WR[ROWS][NW];
static inline uint32_t fold3i(uint32_t x, uint32_t y, uint32_t z, uint32_t m1, uint32_t m2, uint32_t m4)
{
    x = x - ((x >> 1) & m1);
    y = y - ((y >> 1) & m1);
    z = z - ((z >> 1) & m1);
    x = (x & m2) + ((x >> 2) & m2) + (y & m2) + ((y >> 2) & m2) + (z & m2) + ((z >> 2) & m2);
    return (x & m4) + ((x >> 4) & m4);
}
static inline uint32_t fold1i(uint32_t x, uint32_t m1, uint32_t m2, uint32_t m4)
{
    x = x - ((x >> 1) & m1);
    x = (x & m2) + ((x >> 2) & m2);
    return (x & m4) + ((x >> 4) & m4);
}
#define KEEP(v) __asm__("" : "+r"(v))
__attribute__((noinline)) static uint32_t lin_two(const uint32_t *a)
{
    uint32_t m1 = M1, m2 = M2, m4 = M4, m8 = M8, tot = 0, f;
    KEEP(m1); KEEP(m2); KEEP(m4); KEEP(m8);
    for (f = 0; f < ROWS; f += 2u) {
        const uint32_t *v = WR[f], *u = WR[f + 1], *p = a;
        uint32_t l1 = 0, l2 = 0, k;
        for (k = NW / 3u; k > 0u; k--, p += 3, v += 3, u += 3) {
            uint32_t a0 = p[0], a1 = p[1], a2 = p[2];
            l1 += fold3i(a0 ^ v[0], a1 ^ v[1], a2 ^ v[2], m1, m2, m4);
            l2 += fold3i(a0 ^ u[0], a1 ^ u[1], a2 ^ u[2], m1, m2, m4);
        }
        for (k = NW % 3u; k > 0u; k--, p++, v++, u++) {
            l1 += fold1i(*p ^ *v, m1, m2, m4);
            l2 += fold1i(*p ^ *u, m1, m2, m4);
        }
        l1 = (l1 & m8) + ((l1 >> 8) & m8);
        l2 = (l2 & m8) + ((l2 >> 8) & m8);
        tot += ((l1 + (l1 >> 16)) & 0xffffu) + ((l2 + (l2 >> 16)) & 0xffffu);
    }
    return tot;
}
__attribute__((noinline)) static uint32_t lin_one(const uint32_t *a)
{
    uint32_t m1 = M1, m2 = M2, m4 = M4, m8 = M8, tot = 0, f;
    KEEP(m1); KEEP(m2); KEEP(m4); KEEP(m8);
    for (f = 0; f < ROWS; f++) {
        const uint32_t *v = WR[f], *p = a;
        uint32_t l1 = 0, k;
        for (k = NW / 3u; k > 0u; k--, p += 3, v += 3) {
            l1 += fold3i(p[0] ^ v[0], p[1] ^ v[1], p[2] ^ v[2], m1, m2, m4);
        }
        for (k = NW % 3u; k > 0u; k--, p++, v++) {
            l1 += fold1i(*p ^ *v, m1, m2, m4);
        }
        l1 = (l1 & m8) + ((l1 >> 8) & m8);
        tot += (l1 + (l1 >> 16)) & 0xffffu;
    }
    return tot;
}
/* the same, masks as constants (the compiler rematerialises them with l32r instead of spilling) */
__attribute__((noinline)) static uint32_t lin_one_const(const uint32_t *a)
{
    uint32_t tot = 0, f;
    for (f = 0; f < ROWS; f++) {
        const uint32_t *v = WR[f], *p = a;
        uint32_t l1 = 0, k;
        for (k = NW / 3u; k > 0u; k--, p += 3, v += 3) {
            l1 += fold3i(p[0] ^ v[0], p[1] ^ v[1], p[2] ^ v[2], M1, M2, M4);
        }
        for (k = NW % 3u; k > 0u; k--, p++, v++) {
            l1 += fold1i(*p ^ *v, M1, M2, M4);
        }
        l1 = (l1 & M8) + ((l1 >> 8) & M8);
        tot += (l1 + (l1 >> 16)) & 0xffffu;
    }
    return tot;
}
__attribute__((noinline)) static uint32_t div3_call(uint32_t n)
{
    uint32_t s = 0, i;
    for (i = 0; i < n; i++) {
        s += (i + 4u) / 3u;
    }
    return s;
}
__attribute__((noinline)) static uint32_t div3_mul(uint32_t n)
{
    uint32_t s = 0, i;
    for (i = 0; i < n; i++) {
        s += ((i + 4u) * 0xAAABu) >> 17; /* exact for values below 98304 */
    }
    return s;
}

static uint32_t rng_state = 12345u;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state;
}

#define RUN(label, expr, bits)                                                                 \
    do {                                                                                       \
        uint32_t r_;                                                                           \
        h_bench_start();                                                                       \
        r_ = (uint32_t)(expr);                                                                 \
        h_bench_stop();                                                                        \
        sink = r_;                                                                             \
        printf("%s %ld %lu\n", label, (long)(int32_t)r_, (unsigned long)(bits));              \
    } while (0)

int main(void);
int main(void)
{
    uint32_t i;
    for (i = 0; i < NW; i++) {
        A[i] = rnd();
        W[i] = rnd();
    }
    for (i = 0; i < 784u; i++) {
        PIX[i] = (uint8_t)(rnd() >> 24);
    }
    for (i = 0; i < 98u; i++) {
        WB[i] = (uint8_t)(rnd() >> 24);
    }
    for (i = 0; i < ROWS * NW; i++) {
        WR[i / NW][i % NW] = rnd();
    }
    h_bench_start();
    h_bench_stop();
    RUN("swar3", swar3(A, W, NW), 800);
    RUN("swar3_mul", swar3_mul(A, W, NW), 800);
    RUN("swar1_mul", swar1_mul(A, W, NW), 800);
    RUN("swar6_mul", swar6(A, W, NW), 800);
    RUN("table_word", table_word(A, W, NW), 800);
    RUN("table_byte", table_byte((const uint8_t *)A, (const uint8_t *)W, 4u * NW), 800);
    RUN("u8_varshift", u8_varshift(PIX, WB, 784), 784);
    RUN("u8_shiftreg", u8_shiftreg(PIX, WB, 784), 784);
    RUN("u8_bytes", u8_bytes(PIX, WB, 784), 784);
    RUN("lin_two", lin_two(A), ROWS * 800);
    RUN("lin_one", lin_one(A), ROWS * 800);
    RUN("lin_one_const", lin_one_const(A), ROWS * 800);
    RUN("div3_call", div3_call(100), 100);
    RUN("div3_mul", div3_mul(100), 100);
    printf("EBNN-HARNESS OK 1\n");
    return 0;
}
