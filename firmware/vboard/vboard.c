/* vboard: a virtual Arduino-class board for ebnn-codegen. An AVR in libsimavr, paced to
 * the wall clock, with its bootloader, and UART0 on a pseudo-terminal the host opens like
 * the board's USB serial port.
 *
 * usage: vboard MCU FREQ_HZ BOOTLOADER.bin BOOT_ADDR [FLASH_IMAGE]
 *
 *   MCU          simavr's name of the chip (atmega328p, atmega2560)
 *   FREQ_HZ      clock (16000000 on an Uno)
 *   BOOTLOADER   raw image of the bootloader, loaded at BOOT_ADDR (0x7C00: optiboot in a
 *                1 KB boot section); every reset starts there (the BOOTRST fuse)
 *   FLASH_IMAGE  optional file that keeps the flash between runs: loaded at start when it
 *                exists, written when the host closes the port and at exit
 *
 * What it models of a real board:
 *   - auto-reset: a USB serial board resets when the host opens the port (DTR). A pty has
 *     no DTR; the bridge keeps no descriptor of the slave side, so poll() on the master
 *     reports POLLHUP while nobody has the port open, and the closed -> open transition
 *     resets the core with EXTRF set in MCUSR (the bootloader then waits for avrdude);
 *   - power-on: PORF, the bootloader starts the application at once;
 *   - the flash survives resets (only the bootloader's SPM writes change it);
 *   - the receiver as the chip has it: bytes arrive one per byte time at the baud rate
 *     the firmware set (UBRR, U2X), into a 2-byte buffer; a byte that arrives while two
 *     are unread is lost (data overrun), as is a byte sent while the receiver is off (a
 *     USB serial chip has no flow control towards the AVR); bytes the AVR sends while
 *     the port is closed are lost;
 *   - the core is paced to the wall clock, so the bootloader's 1 s watchdog window and
 *     the UART's byte times (simavr's, from UBRR) are real time.
 *   - UDRE is set while the transmit buffer is empty, also after the transmitter was
 *     switched off and on again (the Arduino core's init() does that; simavr alone
 *     then never sets UDRE and a polling sketch waits for ever).
 * Not modelled: the host's baud rate (any setting passes the bytes), framing errors,
 * fuses and lock bits (the bootloader is not write-protected).
 *
 * Output: the pty's path, one line on stdout, then nothing on stdout; notes on stderr.
 * Stops on SIGTERM / SIGINT / SIGHUP (exit 0).  A crashed or halted core (sleep with
 * interrupts off) waits for the next reset, like a real board.
 *
 * Built on first use by ebnn_codegen/boards/vboard.py:
 *   cc -O2 $(pkg-config --cflags simavr) vboard.c -lsimavr -lelf -lutil
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_core.h"
#include "sim_cycle_timers.h"
#include "sim_interrupts.h"
#include "sim_io.h"
#include "sim_regbit.h"

#define MCUSR_ADDR 0x54 /* MCUSR on the ATmega328P and ATmega2560 */
#define UCSR0B_ADDR 0xC1
#define RXEN0_BIT 4
#define SERVICE_HZ 4000 /* pty service and pacing: every 250 us of emulated time */
#define BUF_SIZE 4096

static volatile sig_atomic_t stop_requested = 0;
static uint8_t out_buf[BUF_SIZE];
static size_t out_len = 0;
static uint8_t in_buf[BUF_SIZE];
static size_t in_len = 0, in_pos = 0;
static int halted = 0;
static unsigned long overruns = 0;
static avr_uart_t *uart0 = NULL;
static avr_irq_t *uart0_input = NULL;
static int feeding = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    if (out_len < BUF_SIZE) {
        out_buf[out_len++] = (uint8_t)value;
    }
}

/* One byte arrives at the receiver every byte time while the host has sent some; the
 * chip holds two unread bytes, a third is lost (DOR). */
static avr_cycle_count_t feed_byte(avr_t *avr, avr_cycle_count_t when, void *param)
{
    unsigned unread;
    (void)param;
    if (in_pos >= in_len || !(avr->data[UCSR0B_ADDR] & (1u << RXEN0_BIT))) {
        in_pos = in_len = 0;
        feeding = 0;
        return 0;
    }
    unread = ((unsigned)uart0->input.write + uart_fifo_fifo_size - uart0->input.read) & (uart_fifo_fifo_size - 1u);
    if (unread >= 2u) {
        overruns++;
        in_pos++;
    } else {
        avr_raise_irq(uart0_input, in_buf[in_pos++]);
    }
    return when + (uart0->cycles_per_byte ? uart0->cycles_per_byte : 1);
}

#define TXEN0_BIT 3
static int txen_was_on = 0;

static void on_ucsr0b(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    int on = (v >> TXEN0_BIT) & 1;
    (void)addr;
    (void)param;
    if (on && !txen_was_on && uart0->tx_cnt == 0) {
        avr_raise_interrupt(avr, &uart0->udrc); /* the transmit buffer is empty */
    }
    txen_was_on = on;
}

static avr_uart_t *find_uart0(avr_t *avr, avr_irq_t *input)
{
    avr_io_t *io;
    for (io = avr->io_port; io != NULL; io = io->next) {
        if (io->irq == input && io->kind != NULL && strcmp(io->kind, "uart") == 0) {
            return (avr_uart_t *)io;
        }
    }
    return NULL;
}

/* The emulated time passes while the core sleeps; the pacing loop does the waiting. */
static void sleep_hook(avr_t *avr, avr_cycle_count_t how_long)
{
    (void)avr;
    (void)how_long;
}

/* simavr's raw run step, except that a core that stops (sleep with interrupts off) or
 * crashes is marked halted instead of ending the program. */
static void run_step(avr_t *avr)
{
    int state = avr_run(avr);
    if (state == cpu_Done || state == cpu_Crashed) {
        fprintf(stderr, "vboard: the core %s at cycle %llu; waiting for a reset (open the port)\n",
                state == cpu_Done ? "halted (sleep with interrupts off)" : "crashed", (unsigned long long)avr->cycle);
        halted = 1;
    }
}

static void set_reset_flag(avr_t *avr, int bit)
{
    avr->data[MCUSR_ADDR] = (uint8_t)(1u << bit);
}

static void board_reset(avr_t *avr, int external)
{
    avr_reset(avr);
    set_reset_flag(avr, external ? 1 : 0); /* EXTRF : PORF */
    halted = 0;
    in_len = in_pos = 0;
    out_len = 0;
    feeding = 0; /* avr_reset dropped the cycle timers */
    txen_was_on = 0;
}

static int load_file(const char *path, uint8_t *dst, size_t max, size_t *got)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    *got = fread(dst, 1, max, f);
    fclose(f);
    return 0;
}

static void save_flash(const avr_t *avr, const char *path)
{
    char tmp[4096];
    FILE *f;
    if (path == NULL) {
        return;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (f == NULL) {
        fprintf(stderr, "vboard: cannot write %s: %s\n", tmp, strerror(errno));
        return;
    }
    fwrite(avr->flash, 1, avr->flashend + 1, f);
    if (fclose(f) == 0) {
        rename(tmp, path);
    }
}

/* Move bytes between the pty and the UART; returns 1 when the host has the port open. */
static int service(avr_t *avr, int master, int was_open, int timeout_ms, const char *flash_path)
{
    struct pollfd pfd;
    int open_now;
    pfd.fd = master;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR) {
        return was_open;
    }
    open_now = !(pfd.revents & POLLHUP);
    if (open_now && !was_open) {
        board_reset(avr, 1); /* the host opened the port: DTR pulse, auto-reset */
    } else if (!open_now && was_open) {
        save_flash(avr, flash_path);
        in_len = in_pos = 0;
    }
    if (open_now && (pfd.revents & POLLIN) && in_len < BUF_SIZE) {
        ssize_t n;
        if (in_pos == in_len) {
            in_pos = in_len = 0;
        }
        n = read(master, in_buf + in_len, BUF_SIZE - in_len);
        if (n > 0) {
            in_len += (size_t)n;
        }
    }
    if (!(avr->data[UCSR0B_ADDR] & (1u << RXEN0_BIT))) {
        in_pos = in_len = 0; /* the receiver is off: the bytes are lost */
    } else if (in_pos < in_len && !feeding) {
        feeding = 1;
        avr_cycle_timer_register(avr, uart0->cycles_per_byte ? uart0->cycles_per_byte : 1, feed_byte, NULL);
    }
    if (out_len > 0) {
        if (open_now) {
            ssize_t n = write(master, out_buf, out_len);
            if (n > 0) {
                memmove(out_buf, out_buf + n, out_len - (size_t)n);
                out_len -= (size_t)n;
            }
        } else {
            out_len = 0; /* nobody listens */
        }
    }
    return open_now;
}

int main(int argc, char **argv)
{
    avr_t *avr;
    int master, slave, was_open = 0;
    char name[256];
    struct termios tio;
    uint32_t freq, flags = 0;
    unsigned long boot_addr;
    static uint8_t image[256 * 1024];
    size_t got = 0;
    const char *flash_path = argc > 5 ? argv[5] : NULL;
    uint64_t t0, c0, slice;
    struct sigaction sa;

    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s MCU FREQ_HZ BOOTLOADER.bin BOOT_ADDR [FLASH_IMAGE]\n", argv[0]);
        return 64;
    }
    freq = (uint32_t)strtoul(argv[2], NULL, 0);
    boot_addr = strtoul(argv[4], NULL, 0);
    {
        /* avr_make_mcu_by_name prints a line on stdout: keep stdout for the pty path */
        int saved = dup(1), devnull = open("/dev/null", O_WRONLY);
        fflush(stdout);
        dup2(devnull, 1);
        avr = avr_make_mcu_by_name(argv[1]);
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
        close(devnull);
    }
    if (avr == NULL || freq == 0) {
        fprintf(stderr, "vboard: unknown MCU %s or bad clock %s\n", argv[1], argv[2]);
        return 66;
    }
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr->frequency = freq;
    avr->sleep = sleep_hook;
    if (flash_path != NULL && load_file(flash_path, avr->flash, avr->flashend + 1, &got) == 0) {
        fprintf(stderr, "vboard: flash from %s (%zu bytes)\n", flash_path, got);
    }
    if (load_file(argv[3], image, sizeof image, &got) != 0 || got == 0 || boot_addr + got > avr->flashend + 1) {
        fprintf(stderr, "vboard: cannot load the bootloader %s at 0x%lx\n", argv[3], boot_addr);
        return 65;
    }
    memcpy(avr->flash + boot_addr, image, got);
    avr->codeend = avr->flashend;
    avr->reset_pc = (avr_flashaddr_t)boot_addr;

    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, NULL);
    uart0_input = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    uart0 = find_uart0(avr, uart0_input);
    if (uart0 == NULL) {
        fprintf(stderr, "vboard: %s has no UART0\n", argv[1]);
        return 66;
    }
    avr_register_io_write(avr, UCSR0B_ADDR, on_ucsr0b, NULL);

    if (openpty(&master, &slave, name, NULL, NULL) != 0) {
        fprintf(stderr, "vboard: openpty failed: %s\n", strerror(errno));
        return 71;
    }
    if (tcgetattr(slave, &tio) == 0) {
        cfmakeraw(&tio);
        tcsetattr(slave, TCSANOW, &tio);
    }
    close(slave); /* POLLHUP on the master now means: nobody has the port open */
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    board_reset(avr, 0); /* power-on */
    printf("%s\n", name);
    fflush(stdout);
    fprintf(stderr, "vboard: %s at %lu Hz, bootloader at 0x%lx, UART0 on %s\n", argv[1], (unsigned long)freq, boot_addr,
            name);

    slice = freq / SERVICE_HZ;
    t0 = now_ns();
    c0 = avr->cycle;
    while (!stop_requested) {
        uint64_t until = avr->cycle + slice, emu_ns, wall_ns;
        int wait_ms = 0;
        if (halted) {
            avr->cycle = until; /* time passes on a stopped core */
        } else {
            while (avr->cycle < until && !halted) {
                run_step(avr);
            }
        }
        emu_ns = (uint64_t)((double)(avr->cycle - c0) * 1e9 / (double)freq);
        wall_ns = now_ns() - t0;
        if (emu_ns > wall_ns + 1000000ull) {
            wait_ms = (int)((emu_ns - wall_ns) / 1000000ull); /* ahead of the wall clock */
        } else if (wall_ns > emu_ns + 50000000ull) {
            t0 = now_ns(); /* far behind (a busy host): re-anchor instead of racing to catch up */
            c0 = avr->cycle;
        }
        was_open = service(avr, master, was_open, wait_ms, flash_path);
    }
    save_flash(avr, flash_path);
    fprintf(stderr, "vboard: stopped at cycle %llu (%lu received bytes lost to overruns)\n",
            (unsigned long long)avr->cycle, overruns);
    return 0;
}
