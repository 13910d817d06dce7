/* Integer division and 64-bit multiplication helpers that Debian's libgcc for
 * xtensa-lx106-elf (gcc-xtensa-lx106 12.2) lacks: __divsi3, __udivsi3, __umodsi3,
 * __muldi3, __umulsidi3, __divdi3, __udivdi3, __umoddi3 (and __moddi3, whose libgcc copy
 * needs __umulsidi3).  picolibc's printf calls them, and so does the model code: the lx106 has no MULUH, so gcc turns a division by
 * a constant (n / 3u in the fast kernels) into a __udivsi3 call.
 *
 * Shift-and-subtract after aligning the operands' top bits with NSAU (__builtin_clz): one
 * step per quotient bit, as libgcc's own Xtensa __udivsi3 does, so instruction counts stay
 * representative.  Division by zero returns quotient 0 and the dividend as remainder (this
 * core has no divide-by-zero trap).  tests/test_xtensa.py checks them against Python.
 */
#include <stdint.h>

uint32_t __udivsi3(uint32_t n, uint32_t d);
uint32_t __umodsi3(uint32_t n, uint32_t d);
int32_t __divsi3(int32_t n, int32_t d);
uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
int64_t __divdi3(int64_t n, int64_t d);
int64_t __moddi3(int64_t n, int64_t d);
uint64_t __umulsidi3(uint32_t a, uint32_t b);
uint64_t __muldi3(uint64_t a, uint64_t b);

static uint32_t h_udivmod32(uint32_t n, uint32_t d, uint32_t *rem)
{
    uint32_t q = 0;
    int shift;
    if (d == 0u || n < d) {
        *rem = n;
        return 0u;
    }
    shift = __builtin_clz(d) - __builtin_clz(n);
    d <<= shift;
    for (; shift >= 0; shift--, d >>= 1) {
        q <<= 1;
        if (n >= d) {
            n -= d;
            q |= 1u;
        }
    }
    *rem = n;
    return q;
}

static int h_clz64(uint64_t v)
{
    uint32_t hi = (uint32_t)(v >> 32);
    return hi != 0u ? __builtin_clz(hi) : 32 + __builtin_clz((uint32_t)v);
}

static uint64_t h_udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t q = 0;
    int shift;
    if (d == 0u || n < d) {
        *rem = n;
        return 0u;
    }
    shift = h_clz64(d) - h_clz64(n);
    d <<= shift;
    for (; shift >= 0; shift--, d >>= 1) {
        q <<= 1;
        if (n >= d) {
            n -= d;
            q |= 1u;
        }
    }
    *rem = n;
    return q;
}

uint32_t __udivsi3(uint32_t n, uint32_t d)
{
    uint32_t r;
    return h_udivmod32(n, d, &r);
}

uint32_t __umodsi3(uint32_t n, uint32_t d)
{
    uint32_t r;
    (void)h_udivmod32(n, d, &r);
    return r;
}

int32_t __divsi3(int32_t n, int32_t d)
{
    uint32_t r;
    uint32_t un = n < 0 ? 0u - (uint32_t)n : (uint32_t)n;
    uint32_t ud = d < 0 ? 0u - (uint32_t)d : (uint32_t)d;
    uint32_t q = h_udivmod32(un, ud, &r);
    return (int32_t)((n < 0) != (d < 0) ? 0u - q : q);
}

uint64_t __udivdi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    return h_udivmod64(n, d, &r);
}

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    (void)h_udivmod64(n, d, &r);
    return r;
}

int64_t __divdi3(int64_t n, int64_t d)
{
    uint64_t r;
    uint64_t un = n < 0 ? 0u - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? 0u - (uint64_t)d : (uint64_t)d;
    uint64_t q = h_udivmod64(un, ud, &r);
    return (int64_t)((n < 0) != (d < 0) ? 0u - q : q);
}

int64_t __moddi3(int64_t n, int64_t d)
{
    uint64_t r;
    uint64_t un = n < 0 ? 0u - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? 0u - (uint64_t)d : (uint64_t)d;
    (void)h_udivmod64(un, ud, &r);
    return (int64_t)(n < 0 ? 0u - r : r);
}

/* 32x32 -> 64 from 16-bit partial products with the core's 32-bit MULL */
uint64_t __umulsidi3(uint32_t a, uint32_t b)
{
    uint32_t a0 = a & 0xffffu, a1 = a >> 16, b0 = b & 0xffffu, b1 = b >> 16;
    return (uint64_t)(a0 * b0) + ((uint64_t)(a1 * b0) << 16) + ((uint64_t)(a0 * b1) << 16) + ((uint64_t)(a1 * b1) << 32);
}

/* 16-bit partial products with the core's 32-bit MULL (a 32x32->64 product would call
 * __muldi3 again: the lx106 has no MULUH) */
uint64_t __muldi3(uint64_t a, uint64_t b)
{
    uint64_t low64 = __umulsidi3((uint32_t)a, (uint32_t)b);
    uint32_t cross = (uint32_t)a * (uint32_t)(b >> 32) + (uint32_t)(a >> 32) * (uint32_t)b;
    return low64 + ((uint64_t)cross << 32);
}
