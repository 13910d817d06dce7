/* Xtensa lx106 (ESP8266 class) start-up and semihosting for qemu's `-M sim -cpu lx106`.
 *
 * qemu's sim machine starts the core at its reset vector 0x50000000, not at the ELF
 * entry.  _ResetVector (section .ResetVector.text, placed there by lx106-sim.ld) sets the
 * stack pointer a1 to __stack, moves the exception vectors to h_vectors (VECBASE), clears
 * PS (exceptions go to the kernel vector, no interrupt is enabled) and jumps to picolibc's
 * crt0 `_start` (--crt0=hosted: copies .data, zeroes .bss, calls main, then exit).
 *
 * Every exception ends the program with exit code 128 + EXCCAUSE (kernel and user
 * vectors), 127 (double exception) or 126 (debug, NMI), so qemu stops instead of hanging.
 *
 * I/O is qemu's Xtensa semihosting: the `simcall` instruction with the call number in a2
 * and the arguments in a3..a5; the result comes back in a2 and the guest errno in a3.
 * picolibc's stdio (fopen/fread/fwrite/printf) runs on the POSIX functions below.
 * Limits: qemu passes open()'s flags to the host's open() unchanged, so they are
 * translated here to the values of Linux on x86-64 / arm64 (the hosts the project
 * supports); there is no fstat, isatty or file deletion.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/* Reset vector (0x50000000) and exception vectors (VECBASE = h_vectors, 1 KB aligned).
 * Vector offsets of the lx106 core: debug 0x10, NMI 0x20, kernel 0x30, user 0x50,
 * double 0x70.  Literal pools come first in each section (-mtext-section-literals). */
__asm__(".section .ResetVector.text, \"ax\"\n"
        ".global _ResetVector\n"
        ".type _ResetVector, @function\n"
        ".align 4\n"
        "_ResetVector:\n"
        "    j 1f\n"
        ".align 4\n"
        ".Lh_stack: .word __stack\n"
        ".Lh_vecbase: .word h_vectors\n"
        ".Lh_start: .word _start\n"
        "1:\n"
        "    l32r a1, .Lh_stack\n"
        "    l32r a0, .Lh_vecbase\n"
        "    wsr.vecbase a0\n"
        "    movi a0, 0\n"
        "    wsr.ps a0\n"
        "    rsync\n"
        "    l32r a0, .Lh_start\n"
        "    jx a0\n"
        "\n"
        ".section .h_vectors.text, \"ax\"\n"
        ".global h_vectors\n"
        ".align 1024\n"
        "h_vectors:\n"
        ".org h_vectors + 0x10\n" /* debug (interrupt level 2) */
        "    movi a3, 126\n"
        "    movi a2, 1\n"
        "    simcall\n"
        ".org h_vectors + 0x20\n" /* NMI (interrupt level 3) */
        "    movi a3, 126\n"
        "    movi a2, 1\n"
        "    simcall\n"
        ".org h_vectors + 0x30\n" /* kernel exception */
        "    rsr.exccause a3\n"
        "    addi a3, a3, 127\n"
        "    addi a3, a3, 1\n"
        "    movi a2, 1\n"
        "    simcall\n"
        ".org h_vectors + 0x50\n" /* user exception */
        "    rsr.exccause a3\n"
        "    addi a3, a3, 127\n"
        "    addi a3, a3, 1\n"
        "    movi a2, 1\n"
        "    simcall\n"
        ".org h_vectors + 0x70\n" /* double exception */
        "    movi a3, 127\n"
        "    movi a2, 1\n"
        "    simcall\n"
        ".text\n");

/* qemu target/xtensa semihosting call numbers */
#define H_SYS_EXIT 1
#define H_SYS_READ 3
#define H_SYS_WRITE 4
#define H_SYS_OPEN 5
#define H_SYS_CLOSE 6
#define H_SYS_LSEEK 19

/* Linux (x86-64, arm64) open() flags, what the host's open() understands */
#define H_LINUX_O_CREAT 0x40
#define H_LINUX_O_EXCL 0x80
#define H_LINUX_O_TRUNC 0x200
#define H_LINUX_O_APPEND 0x400

static int32_t h_simcall(int32_t call, int32_t a, int32_t b, int32_t c)
{
    register int32_t a2 __asm__("a2") = call;
    register int32_t a3 __asm__("a3") = a;
    register int32_t a4 __asm__("a4") = b;
    register int32_t a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    if (a2 == -1) {
        errno = (int)a3;
    }
    return a2;
}

static int32_t h_ptr(const void *p)
{
    return (int32_t)(uintptr_t)p;
}

__attribute__((noreturn)) void _exit(int code)
{
    for (;;) {
        (void)h_simcall(H_SYS_EXIT, code, 0, 0);
    }
}

int open(const char *path, int flags, ...)
{
    int32_t host = flags & O_ACCMODE;
    int32_t mode = 0;
    if ((flags & O_CREAT) != 0) {
        va_list ap;
        va_start(ap, flags);
        mode = (int32_t)va_arg(ap, int);
        va_end(ap);
        host |= H_LINUX_O_CREAT;
    }
    if ((flags & O_EXCL) != 0) {
        host |= H_LINUX_O_EXCL;
    }
    if ((flags & O_TRUNC) != 0) {
        host |= H_LINUX_O_TRUNC;
    }
    if ((flags & O_APPEND) != 0) {
        host |= H_LINUX_O_APPEND;
    }
    return (int)h_simcall(H_SYS_OPEN, h_ptr(path), host, mode);
}

int close(int fd)
{
    return (int)h_simcall(H_SYS_CLOSE, fd, 0, 0);
}

ssize_t read(int fd, void *buf, size_t count)
{
    return (ssize_t)h_simcall(H_SYS_READ, fd, h_ptr(buf), (int32_t)count);
}

ssize_t write(int fd, const void *buf, size_t count)
{
    return (ssize_t)h_simcall(H_SYS_WRITE, fd, h_ptr(buf), (int32_t)count);
}

off_t lseek(int fd, off_t offset, int whence)
{
    return (off_t)h_simcall(H_SYS_LSEEK, fd, (int32_t)offset, whence);
}

/* stdin, stdout, stderr: unbuffered streams on the host's file descriptors 0, 1, 2 */
static int h_put(char c, FILE *f)
{
    int fd = f == stdout ? 1 : 2;
    return write(fd, &c, 1) == 1 ? (int)(unsigned char)c : EOF;
}

static int h_get(FILE *f)
{
    unsigned char c;
    (void)f;
    return read(0, &c, 1) == 1 ? (int)c : EOF;
}

static FILE h_stdin = FDEV_SETUP_STREAM(NULL, h_get, NULL, _FDEV_SETUP_READ);
static FILE h_stdout = FDEV_SETUP_STREAM(h_put, NULL, NULL, _FDEV_SETUP_WRITE);
static FILE h_stderr = FDEV_SETUP_STREAM(h_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdin = &h_stdin;
FILE *const stdout = &h_stdout;
FILE *const stderr = &h_stderr;
