/* fuzz_modbus_tcp.c — libFuzzer harness for the answers a Modbus TCP device
 * sends to a read request: mb_tcp_take and mb_tcp_read_answer
 * (south/modbus/modbus_proto.c), the code modbus.c runs on every byte it
 * receives from a device.  Any bytes are an answer (values), an exception, a
 * named defect or "more needed" — never a crash or a read out of bounds.
 *
 * Input: 4 bytes that make the request (table, count, unit), then the bytes
 * the device sends, fed in chunks whose sizes come from the input too (TCP
 * may split an answer anywhere), as tcp_read feeds its receive buffer.
 *
 * Build: cmake -DFB_FUZZ=ON -DCMAKE_C_COMPILER=clang; run:
 *   mkdir -p /tmp/c && ./fuzz_modbus_tcp /tmp/c tests/fuzz/corpus/modbus_tcp
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "south/modbus/modbus_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    int table = data[0] & 3;
    unsigned max = table <= MB_IR ? MB_MAX_READ_REGS : MB_MAX_READ_BITS;
    uint16_t count = (uint16_t)(1 + ((unsigned)data[1] << 8 | data[2]) % max);
    uint8_t req[MB_TCP_REQ_LEN];
    mb_tcp_read_request(req, 0x0102, data[3], table, 0, count);
    data += 4, size -= 4;
    uint8_t buf[2 * MB_TCP_ADU_MAX];
    uint16_t regs[MB_MAX_READ_REGS];
    uint8_t bits[MB_MAX_READ_BITS];
    size_t have = 0;
    while (size) {
        /* the chunk's size from its first byte, at most what the buffer takes */
        size_t n = 1 + data[0] % 64;
        data++, size--;
        if (n > size) n = size;
        if (n > sizeof buf - have) abort(); /* tcp_read's buffer can never be full */
        memcpy(buf + have, data, n);
        have += n;
        data += n, size -= n;
        int exc;
        enum mb_rsp r = mb_tcp_take(req, buf, &have, regs, bits, &exc);
        if (r != MB_RSP_MORE) {
            if (r == MB_RSP_OK && table <= MB_IR) {
                volatile uint16_t sink = regs[count - 1];
                (void)sink;
            }
            if (!mb_rsp_text(r)) abort();
            return 0;
        }
        if (have >= MB_TCP_ADU_MAX) abort(); /* "more" only for an incomplete answer */
    }
    return 0;
}
