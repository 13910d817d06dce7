/* libFuzzer harness for the DDNN message codec and the gateway's local exit
 * (built by fuzz/build.py, ASan + UBSan), on two generated codecs: fzd8
 * (int8 scores, CC aggregator, feature maps with padding bits) and fzd16
 * (int16 scores, MP aggregator, whole feature bytes).
 *
 * Per codec (fuzz_messages_body.h), with every buffer heap-allocated to its exact size:
 *  1. the input as one message: decode_scores / check_features return exactly
 *     the code the message format prescribes (checked against a second,
 *     independent reading of the format); an accepted message reads back to
 *     the same bytes, with the device id and every score in range;
 *  2. the input cut into per-device scores messages: the local exit returns a
 *     class in range, counts the devices that decoded, gives a normalised
 *     entropy in [0, 1] (never NaN) and exits exactly when it should;
 *  3. encode -> decode: any int32 scores and any feature bits give a message
 *     the decoder accepts; bad arguments give the documented codes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fzd16_gateway.h"
#include "fzd16_messages.h"
#include "fzd8_gateway.h"
#include "fzd8_messages.h"

#define CHECK(cond, what)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_messages: invariant violated: %s\n", what); \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define M(x) fzd8_##x
#define MU(x) FZD8_##x
#include "fuzz_messages_body.h"
#undef M
#undef MU

#define M(x) fzd16_##x
#define MU(x) FZD16_##x
#include "fuzz_messages_body.h"
#undef M
#undef MU

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fzd8_fuzz_one(data, size);
    fzd16_fuzz_one(data, size);
    return 0;
}
