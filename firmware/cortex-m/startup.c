/* Cortex-M start-up for the qemu test harness: the vector table and Reset_Handler.
 *
 * Reset_Handler enables the FPU (Cortex-M4F hard-float builds) and jumps to newlib's
 * rdimon crt0 (_start: zeroes .bss, sets up semihosting, calls main, exits with its
 * return value). Every fault or unexpected exception ends the program with exit code
 * 128 + exception number (HardFault = 131) through semihosting, so qemu stops instead
 * of hanging.
 */
#include <stdint.h>

extern uint32_t __stack_top; /* linker script: top of RAM */
extern void _start(void);    /* newlib rdimon crt0 */
extern void _exit(int code); /* semihosting SYS_EXIT */

typedef void (*h_handler_t)(void);

void Reset_Handler(void);
void h_fault(void);

__attribute__((naked, noreturn)) void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* CPACR: full access to CP10 and CP11 */
    __asm__ volatile("ldr r0, =0xE000ED88\n ldr r1, [r0]\n orr r1, r1, #(0xF << 20)\n str r1, [r0]\n dsb\n isb");
#endif
    /* A long branch: a Thumb `b` reaches only +-2 KB (R_ARM_THM_JUMP11), too short once a
     * large model sits between this section and newlib's crt0. */
    __asm__ volatile("ldr r0, =_start\n bx r0\n .ltorg");
}

void h_fault(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    _exit(128 + (int)(ipsr & 0x1FFu));
}

struct h_vectors {
    uint32_t *initial_sp;
    h_handler_t handlers[15];
};

/* Initial SP, Reset, NMI, HardFault, MemManage, BusFault, UsageFault, 4 reserved,
 * SVCall, DebugMonitor, reserved, PendSV, SysTick. */
__attribute__((section(".vectors"), used)) const struct h_vectors h_vector_table = {
    &__stack_top,
    {Reset_Handler, h_fault, h_fault, h_fault, h_fault, h_fault, 0, 0, 0, 0, h_fault, h_fault, 0, h_fault, h_fault},
};
