/* The model as a bare-metal ESP8266 application (no SDK), for `esp8266_image` (esptool
 * elf2image, version 1 image at flash offset 0x0).
 *
 * The ESP8266's ROM bootloader copies the image's segments into IRAM (code, 0x40100000) and
 * data RAM (constants, data, 0x3FFE8000; esp8266.ld) and jumps to the entry, _start: it sets
 * the stack pointer a1 to the top of data RAM (where the ROM's own stack is), zeroes .bss,
 * runs `main` and then waits forever.  main runs H_INFER on each of the H_NUM_SAMPLES
 * embedded inputs (ebnn_samples.c) and prints per input one line
 *     EBNN-ESP8266 <i> <class> <score 0> ... <score K-1>
 * then "EBNN-HARNESS OK <n>".
 *
 * Output: UART0's TX FIFO register (0x60000000; TX FIFO count in bits 16..23 of UART_STATUS
 * at 0x6000001C), at the baud rate the ROM left (74880 baud with the usual 26 MHz crystal).
 * Built with -DH_QEMU_SIM the same program prints through qemu's semihosting instead: that
 * variant runs in `qemu-system-xtensa -M sim -cpu lx106` (tests/test_xtensa.py), the UART
 * variant has not been run on hardware (docs: no SDK start-up, no watchdog feeding, no
 * flash cache: everything lives in IRAM and data RAM).
 */
#include <stdint.h>

#include "ebnn_harness.h"

int main(void);
void h_start_c(void);

extern uint32_t _bss_start, _bss_end;

__asm__(".section .entry.text, \"ax\"\n"
        ".global _start\n"
        ".type _start, @function\n"
        ".align 4\n"
        ".Lh_stack_top: .word _stack_top\n"
        ".Lh_start_c: .word h_start_c\n"
        "_start:\n"
        "    l32r a1, .Lh_stack_top\n"
        "    l32r a0, .Lh_start_c\n"
        "    callx0 a0\n"
        "1:  j 1b\n"
        ".text\n");

#if defined(H_QEMU_SIM)
static void h_write(const char *s, uint32_t n)
{
    register int32_t a2 __asm__("a2") = 4; /* write(fd, buf, len) */
    register int32_t a3 __asm__("a3") = 1;
    register int32_t a4 __asm__("a4") = (int32_t)(uintptr_t)s;
    register int32_t a5 __asm__("a5") = (int32_t)n;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
}

static void h_exit(int code)
{
    register int32_t a2 __asm__("a2") = 1; /* exit(code) */
    register int32_t a3 __asm__("a3") = code;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : : "memory");
}
#else
#define H_UART0_FIFO (*(volatile uint32_t *)0x60000000u)
#define H_UART0_STATUS (*(volatile uint32_t *)0x6000001Cu)

static void h_write(const char *s, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        while (((H_UART0_STATUS >> 16) & 0xffu) >= 126u) {
        }
        H_UART0_FIFO = (uint8_t)s[i];
    }
}

static void h_exit(int code)
{
    (void)code;
}
#endif

/* decimal text of v into buf (at least 12 bytes), returns the length; no division helpers */
static uint32_t h_itoa(int32_t v, char *buf)
{
    static const uint32_t pow10[10] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                       10000u,      1000u,      100u,      10u,      1u};
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v, n = 0, k;
    int started = 0;
    if (v < 0) {
        buf[n++] = '-';
    }
    for (k = 0; k < 10u; k++) {
        char digit = '0';
        while (u >= pow10[k]) {
            u -= pow10[k];
            digit++;
        }
        if (digit != '0' || started || k == 9u) {
            buf[n++] = digit;
            started = 1;
        }
    }
    return n;
}

static void h_put_text(const char *s)
{
    uint32_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    h_write(s, n);
}

static void h_put_int(int32_t v)
{
    char buf[12];
    h_write(" ", 1);
    h_write(buf, h_itoa(v, buf));
}

static uint8_t h_input[H_INPUT_BYTES];
static int32_t h_scores[H_NUM_CLASSES];

int main(void)
{
    uint32_t s, i;
    for (s = 0; s < H_NUM_SAMPLES; s++) {
        int pred;
        int k;
        for (i = 0; i < H_INPUT_BYTES; i++) {
            h_input[i] = h_samples[s * H_INPUT_BYTES + i];
        }
        pred = H_INFER(h_input, h_scores);
        h_put_text("EBNN-ESP8266");
        h_put_int((int32_t)s);
        h_put_int(pred);
        for (k = 0; k < H_NUM_CLASSES; k++) {
            h_put_int(h_scores[k]);
        }
        h_write("\n", 1);
        if (pred < 0 || pred >= H_NUM_CLASSES) {
            h_put_text("EBNN-HARNESS FAIL\n");
            return 4;
        }
    }
    h_put_text("EBNN-HARNESS OK");
    h_put_int((int32_t)H_NUM_SAMPLES);
    h_write("\n", 1);
    return 0;
}

void h_start_c(void)
{
    uint32_t *p;
    for (p = &_bss_start; p < &_bss_end; p++) {
        *p = 0u;
    }
    h_exit(main());
}
