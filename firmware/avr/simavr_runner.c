/* simavr_runner: runs an AVR firmware ELF in libsimavr (cycle-exact) for ebnn-codegen.
 *
 * usage: simavr_runner FIRMWARE.elf MCU FREQ_HZ MAX_CYCLES
 *
 * The firmware talks to the runner through four I/O registers (no .mmcu section needed):
 *   UART0 TX      every byte goes to stdout, raw (binary records, or Serial.print text)
 *   GPIOR0 (0x3E) every byte goes to stderr (text lines: the harness's sentinel)
 *   GPIOR1 (0x4A) 1 = region start, 2 = region stop: prints
 *                 "EBNN-REGION <i> <cycles> <stack bytes>" on stderr, where stack bytes
 *                 = SP at the start marker minus the lowest SP seen inside the region
 *   GPIOR2 (0x4B) stop now; the value written is the exit code
 * At the end it prints "EBNN-TOTAL-CYCLES <n>" and "EBNN-PEAK-STACK <bytes below RAMEND>".
 * Exit code: the firmware's GPIOR2 value; 0 after `cli; sleep`; 100 crash; 101 cycle limit;
 * 65/66 cannot load the ELF / unknown MCU.
 *
 * Built on first use by ebnn_codegen/targets/mcu.py:
 *   cc -O2 $(pkg-config --cflags simavr) simavr_runner.c -lsimavr -lelf
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

#define REG_CONSOLE 0x3E /* GPIOR0 */
#define REG_MARK 0x4A    /* GPIOR1 */
#define REG_EXIT 0x4B    /* GPIOR2 */

static int exit_code = -1;
static int in_region = 0;
static unsigned region_index = 0;
static avr_cycle_count_t region_t0;
static uint16_t region_sp0, region_min_sp;

static uint16_t stack_pointer(const avr_t *avr)
{
    return (uint16_t)(avr->data[0x5D] | (avr->data[0x5E] << 8)); /* SPL, SPH */
}

static void on_uart(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    fputc((int)(value & 0xFF), stdout);
}

static void on_console(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)avr;
    (void)addr;
    (void)param;
    fputc(v, stderr);
}

static void on_mark(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)addr;
    (void)param;
    if (v == 1) {
        in_region = 1;
        region_t0 = avr->cycle;
        region_sp0 = region_min_sp = stack_pointer(avr);
    } else if (v == 2 && in_region) {
        in_region = 0;
        fprintf(stderr, "EBNN-REGION %u %llu %u\n", region_index++, (unsigned long long)(avr->cycle - region_t0),
                (unsigned)(region_sp0 - region_min_sp));
    }
}

static void on_exit_reg(avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)addr;
    (void)param;
    exit_code = v;
    avr->state = cpu_Done;
}

int main(int argc, char **argv)
{
    elf_firmware_t fw;
    avr_t *avr;
    uint32_t flags = 0;
    unsigned long long max_cycles;
    uint16_t min_sp = 0xFFFF;
    int state, saved, devnull, err;

    if (argc != 5) {
        fprintf(stderr, "usage: %s FIRMWARE.elf MCU FREQ_HZ MAX_CYCLES\n", argv[0]);
        return 64;
    }
    memset(&fw, 0, sizeof fw);
    /* elf_read_firmware prints "Loaded ..." lines on stdout: keep stdout for the UART only */
    fflush(stdout);
    saved = dup(1);
    devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    err = elf_read_firmware(argv[1], &fw);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(devnull);
    if (err) {
        fprintf(stderr, "simavr_runner: cannot load %s\n", argv[1]);
        return 65;
    }
    fw.frequency = (uint32_t)strtoul(argv[3], NULL, 0);
    max_cycles = strtoull(argv[4], NULL, 0);
    avr = avr_make_mcu_by_name(argv[2]);
    if (avr == NULL) {
        fprintf(stderr, "simavr_runner: unknown MCU %s\n", argv[2]);
        return 66;
    }
    avr_init(avr);
    avr->log = LOG_ERROR;
    avr_load_firmware(avr, &fw);

    /* raw UART bytes to our callback, not simavr's line-buffered, coloured console */
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart, NULL);
    avr_register_io_write(avr, REG_CONSOLE, on_console, NULL);
    avr_register_io_write(avr, REG_MARK, on_mark, NULL);
    avr_register_io_write(avr, REG_EXIT, on_exit_reg, NULL);

    /* one instruction per avr_run: track the lowest stack pointer */
    do {
        uint16_t sp;
        state = avr_run(avr);
        sp = stack_pointer(avr);
        if (sp < min_sp) {
            min_sp = sp;
        }
        if (in_region && sp < region_min_sp) {
            region_min_sp = sp;
        }
    } while (state != cpu_Done && state != cpu_Crashed && avr->cycle < max_cycles);

    fflush(stdout);
    fprintf(stderr, "EBNN-TOTAL-CYCLES %llu\nEBNN-PEAK-STACK %u\n", (unsigned long long)avr->cycle,
            (unsigned)(avr->ramend - min_sp));
    if (state == cpu_Crashed) {
        fprintf(stderr, "simavr_runner: the AVR crashed at cycle %llu\n", (unsigned long long)avr->cycle);
        return 100;
    }
    if (state != cpu_Done) {
        fprintf(stderr, "simavr_runner: cycle limit %llu reached\n", max_cycles);
        return 101;
    }
    return exit_code < 0 ? 0 : exit_code;
}
