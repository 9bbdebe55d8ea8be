/* fuzz_modbus_addr.c — libFuzzer harness for the Modbus address parser and
 * the register codec (src/south/modbus/modbus_proto.c).
 *
 * Input layout:  ADDRESS '\n' ORDER '\n' REGISTER-BYTES
 * (each part optional).  The address and order are parsed with base 0 or 1
 * and an array index taken from the first register byte; when they parse,
 * the register bytes (big-endian, zero-padded) are decoded, the value is
 * re-encoded and, for integer types, must give the same registers back.
 * Finally a two-item plan over the address is built and split.  Any crash,
 * sanitizer report or failed round trip is a bug.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_modbus_addr /tmp/c tests/fuzz/corpus/modbus
 * (new inputs go to the first directory: keep the seeds clean)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/modbus/modbus_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char addr[160], order[32];
    size_t i = 0, n = 0;
    while (i < size && data[i] != '\n' && n < sizeof addr - 1) addr[n++] = (char)data[i++];
    addr[n] = 0;
    if (i < size && data[i] == '\n') i++;
    n = 0;
    while (i < size && data[i] != '\n' && n < sizeof order - 1) order[n++] = (char)data[i++];
    order[n] = 0;
    if (i < size && data[i] == '\n') i++;
    const uint8_t *rb = data + i;
    size_t rlen = size - i;

    struct mb_addr_in in = {
        .text = addr,
        .order = order[0] ? order : NULL,
        .index = rlen ? rb[0] % 8 : 0,
        .base = (int)(size & 1),
        .type = FB_T_NONE,
        .str_len = 0,
    };
    struct mb_addr a;
    struct fb_err err = {0};
    if (mb_addr_parse(&in, &a, &err) != 0) return 0;
    char fmt[64];
    mb_addr_fmt(&a, fmt, sizeof fmt);

    uint16_t regs[MB_MAX_READ_REGS];
    uint8_t bits[1];
    memset(regs, 0, sizeof regs);
    for (size_t k = 0; k < a.count && 2 * k + 1 < rlen; k++) regs[k] = (uint16_t)(rb[2 * k] << 8 | rb[2 * k + 1]);
    bits[0] = rlen ? rb[0] & 1 : 0;

    struct fb_value v;
    char sbuf[MB_MAX_READ_REGS * 2 + 1];
    uint32_t q = mb_decode(&a, regs, bits, &v, sbuf, sizeof sbuf);
    if (q == FB_Q_GOOD) {
        uint16_t back[MB_MAX_READ_REGS];
        int rc = mb_encode(&a, &v, back, MB_MAX_READ_REGS, &err);
        if (fb_type_is_int((enum fb_type)a.type) && !a.has_bit && a.table <= MB_IR) {
            if (rc != a.count) abort();
            if (memcmp(back, regs, a.count * sizeof *regs) != 0) abort();
        }
    }

    struct mb_addr b = a;
    b.addr = (uint16_t)(a.addr + a.count <= 65535 - 3 ? a.addr + a.count + 2 : a.addr);
    a.tag = 0; /* the address names its tag */
    b.tag = 1;
    struct fb_tag tags[2] = {{.addr = &a}, {.addr = &b}}; /* the device's tags */
    struct mb_item items[2] = {{.ix = 0}, {.ix = 1}};
    struct mb_limits lim = {10, MB_MAX_READ_REGS, MB_MAX_READ_BITS};
    struct mb_plan *p;
    if (mb_plan_build(tags, items, 2, &lim, &p, &err) == 0) {
        for (uint32_t k = 0; k < p->nblocks; k++)
            if (mb_plan_can_split(p, tags, k)) mb_plan_split(p, tags, k);
        mb_plan_free(p);
    }
    return 0;
}
