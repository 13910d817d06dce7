/* QEMU TCG plugin (plugin API v1, QEMU 7.2): exact counts of executed guest instructions.
 *
 * args: start=0xADDR,stop=0xADDR (the harness's h_bench_start / h_bench_stop)
 * Every instruction adds 1 to a counter (inline, no callback). Entering the function at
 * `start` opens a region, entering the one at `stop` closes it; at exit the plugin logs
 *   EBNN-REGION <i> <instructions>   for every region, in order
 *   EBNN-INSNS <total>
 * through qemu's log (run qemu with `-d plugin -D FILE`).
 *
 * Debian ships no qemu-plugin.h: the few prototypes used are declared here, as in QEMU's
 * include/qemu/qemu-plugin.h (version 1). Built on first use by ebnn_codegen/targets/mcu.py:
 *   cc -shared -fPIC -O2 -fvisibility=hidden icount_plugin.c
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct {
        int min, cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus, max_vcpus;
        } system;
    };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1;

#define MAX_REGIONS 1024

static uint64_t total, region_t0, start_pc = ~0ull, stop_pc = ~0ull;
static uint64_t regions[MAX_REGIONS];
static unsigned n_regions, dropped;
static int open_region;

static void on_start(unsigned int vcpu, void *u)
{
    (void)vcpu;
    (void)u;
    region_t0 = total;
    open_region = 1;
}

static void on_stop(unsigned int vcpu, void *u)
{
    (void)vcpu;
    (void)u;
    if (!open_region) {
        return;
    }
    open_region = 0;
    if (n_regions < MAX_REGIONS) {
        regions[n_regions++] = total - region_t0;
    } else {
        dropped++;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        /* the callbacks run before the inline add of the same instruction */
        if (pc == start_pc) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (pc == stop_pc) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
    }
}

static void on_exit_cb(qemu_plugin_id_t id, void *u)
{
    char line[96];
    unsigned i;
    (void)id;
    (void)u;
    for (i = 0; i < n_regions; i++) {
        snprintf(line, sizeof line, "EBNN-REGION %u %llu\n", i, (unsigned long long)regions[i]);
        qemu_plugin_outs(line);
    }
    snprintf(line, sizeof line, "EBNN-INSNS %llu\n", (unsigned long long)total);
    qemu_plugin_outs(line);
    if (dropped) {
        snprintf(line, sizeof line, "EBNN-DROPPED %u\n", dropped);
        qemu_plugin_outs(line);
    }
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; i++) {
        if (strncmp(argv[i], "start=", 6) == 0) {
            start_pc = strtoull(argv[i] + 6, NULL, 0) & ~1ull; /* drop the Thumb bit */
        } else if (strncmp(argv[i], "stop=", 5) == 0) {
            stop_pc = strtoull(argv[i] + 5, NULL, 0) & ~1ull;
        }
    }
    if (start_pc == ~0ull || stop_pc == ~0ull) {
        fprintf(stderr, "icount_plugin: need start=ADDR,stop=ADDR\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
