/* simavr_uart_feed: run an Arduino sketch (ATmega328P ELF) in libsimavr and type bytes into its UART.
 *
 * usage: simavr_uart_feed FIRMWARE.elf INPUT.bin CHUNK MAX_CYCLES
 *
 * Talks to the sketch as a PC does (request, answer): waits for its first line (the "ready"
 * banner), then sends INPUT.bin in messages of CHUNK bytes (the last one may be shorter) to
 * UART0 RX at 115200 baud (one byte every 1389 cycles of the 16 MHz core, holding back while
 * simavr's input FIFO is full), each one after the answer to the one before: an answer ends
 * with a line that does not start with "class ". Everything the sketch writes to UART0 TX goes
 * to stdout. Exit code 0 once every message is answered, 101 at MAX_CYCLES, 100 if the AVR
 * crashed.
 * Test support for tests/test_packaging.py (the serial example sketch); build with
 *   cc -O2 $(pkg-config --cflags simavr) simavr_uart_feed.c -lsimavr -lelf
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_io.h"

#define CYCLES_PER_BYTE 1389u /* 16 MHz / (115200 baud / 10 bits) */

static int xoff = 0;
static unsigned answers = 0; /* lines that end an answer (the banner counts as one) */
static char line[8];
static size_t line_len = 0;

static void on_tx(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    char c = (char)(value & 0xFF);
    fputc(c, stdout);
    if (c == '\n') {
        if (!(line_len >= 6 && memcmp(line, "class ", 6) == 0)) {
            answers++;
        }
        line_len = 0;
    } else if (line_len < sizeof line) {
        line[line_len++] = c;
    }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xoff = 0;
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xoff = 1;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        return NULL;
    }
    buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    elf_firmware_t fw;
    avr_t *avr;
    uint32_t flags = 0;
    unsigned char *data;
    size_t len = 0, sent = 0, chunk;
    unsigned messages;
    unsigned long long max_cycles;
    avr_cycle_count_t next = 0;
    avr_irq_t *rx;
    int state, saved, devnull;

    if (argc != 5) {
        fprintf(stderr, "usage: %s FIRMWARE.elf INPUT.bin LINES MAX_CYCLES\n", argv[0]);
        return 64;
    }
    data = read_all(argv[2], &len);
    if (data == NULL) {
        fprintf(stderr, "simavr_uart_feed: cannot read %s\n", argv[2]);
        return 66;
    }
    chunk = (size_t)strtoul(argv[3], NULL, 0);
    if (chunk == 0) {
        return 64;
    }
    messages = (unsigned)((len + chunk - 1) / chunk);
    max_cycles = strtoull(argv[4], NULL, 0);
    memset(&fw, 0, sizeof fw);
    fflush(stdout);
    saved = dup(1);
    devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1); /* elf_read_firmware talks on stdout */
    state = elf_read_firmware(argv[1], &fw);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(devnull);
    if (state != 0) {
        fprintf(stderr, "simavr_uart_feed: cannot load %s\n", argv[1]);
        return 65;
    }
    fw.frequency = 16000000;
    avr = avr_make_mcu_by_name("atmega328p");
    if (avr == NULL) {
        return 66;
    }
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr_load_firmware(avr, &fw);
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_tx, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);
    rx = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);

    do {
        state = avr_run(avr);
        /* message k (bytes [k*chunk, (k+1)*chunk)) goes out once k+1 answers have come */
        if (sent < len && answers >= 1 + sent / chunk && !xoff && avr->cycle >= next) {
            avr_raise_irq(rx, data[sent++]);
            next = avr->cycle + CYCLES_PER_BYTE;
        }
    } while (state != cpu_Done && state != cpu_Crashed && answers < 1 + messages && avr->cycle < max_cycles);
    fflush(stdout);
    if (state == cpu_Crashed) {
        fprintf(stderr, "simavr_uart_feed: the AVR crashed\n");
        return 100;
    }
    if (answers < 1 + messages) {
        fprintf(stderr, "simavr_uart_feed: %u of %u answers after %llu cycles (%zu of %zu bytes sent)\n",
                answers ? answers - 1 : 0, messages, (unsigned long long)avr->cycle, sent, len);
        return 101;
    }
    return 0;
}
