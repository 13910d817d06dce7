/* The ebnn-codegen serial agent: the generated model behind a framed binary protocol on
 * the UART, so that the host can run, verify and time the model on the board itself
 * (`ebnn-gen run/verify/bench --port`). Protocol: docs/boards.md.
 *
 * Frame: 0xEB 0x4E | type u8 | seq u8 | length u16 | payload | CRC-16 u16
 *   (little-endian; CRC-16/CCITT-FALSE over type, seq, length and payload).
 * Requests: INFO (0x01, no payload), INFER (0x02: flags u8 + the input bytes, C,H,W
 * order; flags bit 0 = keep every hidden block's output for LAYER), LAYER (0x03: block
 * u8). Replies: the request's type | 0x80 with the request's seq, or ERROR (0x7F:
 * code u8, request type u8).
 *
 * Robustness: bytes outside a frame are skipped until the sync pair; a frame whose next
 * byte does not come within A_IDLE_TICKS is dropped (a half-sent frame); a wrong length
 * is refused from the header, a wrong CRC after the payload, each with an ERROR reply.
 * The host matches replies by seq and retries.
 *
 * ebnn_agent.h (generated, templates/agent.h.j2) binds A_RUN and the sizes to one
 * model. Ports: AVR (ATmega328P/2560: USART0, Timer1 with an overflow interrupt as a
 * 32-bit tick counter); ARM MPS2 in qemu (A_PORT_CMSDK: CMSDK UART0 and TIMER0). Under the Arduino core (ARDUINO defined) the sketch calls
 * ebnn_agent_main() from setup(); otherwise main() does.
 * RAM: the input, the workspace, the trace, the scores and a few bytes of state.
 */
#include <stddef.h>
#include <stdint.h>

#include "ebnn_agent.h"

#define A_SYNC0 0xEBu
#define A_SYNC1 0x4Eu
#define A_INFO_REQ 0x01u
#define A_INFER_REQ 0x02u
#define A_LAYER_REQ 0x03u
#define A_REPLY 0x80u
#define A_ERROR 0x7Fu
#define A_ERR_CRC 1u
#define A_ERR_LENGTH 2u
#define A_ERR_TYPE 3u
#define A_ERR_NO_TRACE 4u
#define A_ERR_BLOCK 5u
#define A_ERR_MODEL 6u
#define A_FLAG_TRACE 0x01u

/* ---- port: AVR ------------------------------------------------------------------- */
#if defined(__AVR__)
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/wdt.h>

#define A_FLASH PROGMEM
#define A_READ8(p) pgm_read_byte(p)
#define A_READ16(p) pgm_read_word(p)

#if A_TIMER_PRESCALER == 1
#define A_TIMER_BITS _BV(CS10)
#elif A_TIMER_PRESCALER == 8
#define A_TIMER_BITS _BV(CS11)
#elif A_TIMER_PRESCALER == 64
#define A_TIMER_BITS (_BV(CS11) | _BV(CS10))
#elif A_TIMER_PRESCALER == 256
#define A_TIMER_BITS _BV(CS12)
#else
#define A_TIMER_BITS (_BV(CS12) | _BV(CS10))
#endif

typedef uint16_t a_idle_t;

static volatile uint16_t a_overflows;

ISR(TIMER1_OVF_vect)
{
    a_overflows++;
}

static void port_init(void)
{
    cli();
    MCUSR = 0;
    wdt_disable();
    UBRR0 = (uint16_t)A_UBRR;
    UCSR0A = (uint8_t)(A_U2X ? _BV(U2X0) : 0);
    UCSR0C = (uint8_t)(_BV(UCSZ01) | _BV(UCSZ00));
    UCSR0B = (uint8_t)(_BV(RXEN0) | _BV(TXEN0));
    TCCR1B = 0; /* the bootloader may have left Timer1 running */
    TCCR1A = 0;
    TCNT1 = 0;
    TIFR1 = (uint8_t)(_BV(TOV1) | _BV(OCF1A) | _BV(OCF1B) | _BV(ICF1));
    TIMSK1 = (uint8_t)_BV(TOIE1);
    TCCR1B = (uint8_t)A_TIMER_BITS;
    sei();
}

/* Ticks since start, 32 bits (the overflow interrupt counts the high half). Inlined:
 * the timed region of INFER should hold little else than the inference. */
static inline uint32_t port_ticks(void) __attribute__((always_inline));
static inline uint32_t port_ticks(void)
{
    uint8_t sreg = SREG;
    uint16_t lo, hi;
    cli();
    lo = TCNT1;
    hi = a_overflows;
    if ((TIFR1 & _BV(TOV1)) && lo < 0x8000u) {
        hi++; /* overflowed between cli and the read: not yet counted */
    }
    SREG = sreg;
    return ((uint32_t)hi << 16) | lo;
}

/* The next byte; -1 if none comes within `idle` ticks (0: wait for ever). */
static int port_getc(a_idle_t idle)
{
    uint16_t t0 = TCNT1;
    while (!(UCSR0A & _BV(RXC0))) {
        if (idle != 0u && (uint16_t)(TCNT1 - t0) > idle) {
            return -1;
        }
    }
    return (int)UDR0;
}

static void port_putc(uint8_t c)
{
    loop_until_bit_is_set(UCSR0A, UDRE0);
    UDR0 = c;
}

#elif defined(A_PORT_CMSDK)
/* ARM MPS2 boards (qemu -M mps2-an385 / an386): CMSDK APB UART0 and TIMER0, both on the
 * 25 MHz peripheral clock; the timer is a 32-bit down counter (171 s of range). */
#define A_FLASH
#define A_READ8(p) (*(p))
#define A_READ16(p) (*(p))
#define A_REG(addr) (*(volatile uint32_t *)(addr))
#define A_UART_DATA A_REG(0x40004000u)
#define A_UART_STATE A_REG(0x40004004u)
#define A_UART_CTRL A_REG(0x40004008u)
#define A_UART_BAUDDIV A_REG(0x40004010u)
#define A_TIMER_CTRL A_REG(0x40000000u)
#define A_TIMER_VALUE A_REG(0x40000004u)
#define A_TIMER_RELOAD A_REG(0x40000008u)

typedef uint32_t a_idle_t;

static void port_init(void)
{
    A_UART_BAUDDIV = (uint32_t)A_UBRR;
    A_UART_CTRL = 3u; /* TX and RX enabled, no interrupts */
    A_TIMER_CTRL = 0u;
    A_TIMER_RELOAD = 0xFFFFFFFFu;
    A_TIMER_VALUE = 0xFFFFFFFFu;
    A_TIMER_CTRL = 1u;
}

static uint32_t port_ticks(void)
{
    return 0xFFFFFFFFu - A_TIMER_VALUE;
}

static int port_getc(a_idle_t idle)
{
    uint32_t t0 = port_ticks();
    while (!(A_UART_STATE & 2u)) {
        if (idle != 0u && port_ticks() - t0 > idle) {
            return -1;
        }
    }
    return (int)(A_UART_DATA & 0xFFu);
}

static void port_putc(uint8_t c)
{
    while (A_UART_STATE & 1u) {
    }
    A_UART_DATA = c;
}

#else
#error "ebnn_agent.c: no port for this architecture (AVR, or ARM MPS2 with A_PORT_CMSDK)"
#endif

/* ---- the agent ------------------------------------------------------------------- */

static uint8_t a_input[A_INPUT_BYTES];
static uint8_t a_workspace[A_WORKSPACE_BYTES];
static uint8_t a_trace[A_TRACE_BYTES];
static int32_t a_scores[A_NUM_CLASSES];
static uint8_t a_have_trace;
static uint16_t a_tx_crc;

static const uint8_t a_info[A_INFO_BYTES] A_FLASH = A_INFO;
static const uint16_t a_trace_offsets[A_NUM_HIDDEN] A_FLASH = A_TRACE_OFFSETS;
static const uint16_t a_block_bytes[A_NUM_HIDDEN] A_FLASH = A_BLOCK_BYTES;

/* CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection. */
static uint16_t crc16_update(uint16_t crc, uint8_t byte)
{
    uint8_t i;
    crc = (uint16_t)(crc ^ ((uint16_t)byte << 8));
    for (i = 0; i < 8u; i++) {
        crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void tx_byte(uint8_t b)
{
    a_tx_crc = crc16_update(a_tx_crc, b);
    port_putc(b);
}

static void tx_u16(uint16_t v)
{
    tx_byte((uint8_t)(v & 0xFFu));
    tx_byte((uint8_t)(v >> 8));
}

static void tx_u32(uint32_t v)
{
    tx_u16((uint16_t)(v & 0xFFFFu));
    tx_u16((uint16_t)(v >> 16));
}

static void tx_begin(uint8_t type, uint8_t seq, uint16_t length)
{
    port_putc(A_SYNC0);
    port_putc(A_SYNC1);
    a_tx_crc = 0xFFFFu;
    tx_byte(type);
    tx_byte(seq);
    tx_u16(length);
}

static void tx_end(void)
{
    uint16_t crc = a_tx_crc;
    port_putc((uint8_t)(crc & 0xFFu));
    port_putc((uint8_t)(crc >> 8));
}

static void tx_error(uint8_t seq, uint8_t code, uint8_t type)
{
    tx_begin(A_ERROR, seq, 2u);
    tx_byte(code);
    tx_byte(type);
    tx_end();
}

/* A byte of a frame (added to the CRC); -1 after the idle timeout. */
static int rx_byte(uint16_t *crc)
{
    int c = port_getc((a_idle_t)A_IDLE_TICKS);
    if (c >= 0) {
        *crc = crc16_update(*crc, (uint8_t)c);
    }
    return c;
}

static void do_info(uint8_t seq)
{
    uint16_t i;
    tx_begin((uint8_t)(A_INFO_REQ | A_REPLY), seq, (uint16_t)A_INFO_BYTES);
    for (i = 0; i < (uint16_t)A_INFO_BYTES; i++) {
        tx_byte(A_READ8(&a_info[i]));
    }
    tx_end();
}

static void do_infer(uint8_t seq, uint8_t flags)
{
    uint32_t t0, t1;
    int pred;
    uint16_t k;
    uint8_t trace = (uint8_t)(flags & A_FLAG_TRACE);
    a_have_trace = 0;
    t0 = port_ticks();
    pred = A_RUN(a_input, a_scores, a_workspace, trace ? a_trace : NULL);
    t1 = port_ticks();
    if (pred < 0) {
        tx_error(seq, A_ERR_MODEL, A_INFER_REQ);
        return;
    }
    a_have_trace = trace;
    tx_begin((uint8_t)(A_INFER_REQ | A_REPLY), seq, (uint16_t)(2u + 4u * A_NUM_CLASSES + 4u));
    tx_u16((uint16_t)pred);
    for (k = 0; k < (uint16_t)A_NUM_CLASSES; k++) {
        tx_u32((uint32_t)a_scores[k]);
    }
    tx_u32(t1 - t0);
    tx_end();
}

static void do_layer(uint8_t seq, uint8_t block)
{
    uint16_t offset, n, i;
    if (!a_have_trace) {
        tx_error(seq, A_ERR_NO_TRACE, A_LAYER_REQ);
        return;
    }
    if (block >= (uint8_t)A_NUM_HIDDEN) {
        tx_error(seq, A_ERR_BLOCK, A_LAYER_REQ);
        return;
    }
    offset = A_READ16(&a_trace_offsets[block]);
    n = A_READ16(&a_block_bytes[block]);
    tx_begin((uint8_t)(A_LAYER_REQ | A_REPLY), seq, (uint16_t)(1u + n));
    tx_byte(block);
    for (i = 0; i < n; i++) {
        tx_byte(a_trace[offset + i]);
    }
    tx_end();
}

/* One frame: hunt for the sync pair, read the header and the payload, check the CRC,
 * answer. Returns when the frame is done or dropped. */
static void serve_one(void)
{
    uint16_t crc = 0xFFFFu, length, want, i, got_crc;
    uint8_t type, seq, small = 0;
    int c;

    if (port_getc(0) != (int)A_SYNC0) {
        return;
    }
    do {
        c = port_getc((a_idle_t)A_IDLE_TICKS);
    } while (c == (int)A_SYNC0);
    if (c != (int)A_SYNC1) {
        return;
    }
    if ((c = rx_byte(&crc)) < 0) {
        return;
    }
    type = (uint8_t)c;
    if ((c = rx_byte(&crc)) < 0) {
        return;
    }
    seq = (uint8_t)c;
    if ((c = rx_byte(&crc)) < 0) {
        return;
    }
    length = (uint16_t)c;
    if ((c = rx_byte(&crc)) < 0) {
        return;
    }
    length = (uint16_t)(length | ((uint16_t)c << 8));
    if (type == A_INFO_REQ) {
        want = 0;
    } else if (type == A_INFER_REQ) {
        want = (uint16_t)(1u + A_INPUT_BYTES);
    } else if (type == A_LAYER_REQ) {
        want = 1;
    } else {
        tx_error(seq, A_ERR_TYPE, type);
        return;
    }
    if (length != want) {
        tx_error(seq, A_ERR_LENGTH, type);
        return;
    }
    for (i = 0; i < length; i++) {
        if ((c = rx_byte(&crc)) < 0) {
            return; /* half-sent frame: dropped */
        }
        if (i == 0) {
            small = (uint8_t)c;
        } else {
            a_input[i - 1u] = (uint8_t)c;
        }
    }
    if ((c = port_getc((a_idle_t)A_IDLE_TICKS)) < 0) {
        return;
    }
    got_crc = (uint16_t)c;
    if ((c = port_getc((a_idle_t)A_IDLE_TICKS)) < 0) {
        return;
    }
    got_crc = (uint16_t)(got_crc | ((uint16_t)c << 8));
    if (got_crc != crc) {
        if (type == A_INFER_REQ) {
            a_have_trace = 0; /* the input buffer holds the damaged payload now */
        }
        tx_error(seq, A_ERR_CRC, type);
        return;
    }
    if (type == A_INFO_REQ) {
        do_info(seq);
    } else if (type == A_INFER_REQ) {
        do_infer(seq, small);
    } else {
        do_layer(seq, small);
    }
}

void ebnn_agent_main(void);

void ebnn_agent_main(void)
{
    port_init();
    for (;;) {
        serve_one();
    }
}

#if !defined(ARDUINO)
int main(void)
{
    ebnn_agent_main();
    return 0;
}
#endif
