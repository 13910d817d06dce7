/* The body of the DDNN message harness, included once per generated codec by
 * fuzz_messages.c with M(x) (lower-case names: fzd8_##x) and MU(x) (macros:
 * FZD8_##x) defined.  It defines M(fuzz_one)(data, size). */

/* What the decoder must answer, written here from the message format
 * (ebnn_codegen/ddnn/messages.py) independently of the generated C. */
static int M(expected_scores_code)(const uint8_t *msg, size_t len)
{
    size_t k;
    if (len < MU(MSG_HEADER_BYTES)) {
        return MU(MSG_ERR_LENGTH);
    }
    if ((msg[0] >> 6) != MU(MSG_SCORES)) {
        return MU(MSG_ERR_TYPE);
    }
    if ((msg[0] & 0x3F) >= MU(NUM_DEVICES)) {
        return MU(MSG_ERR_SENDER);
    }
    if (len != MU(SCORES_MSG_BYTES)) {
        return MU(MSG_ERR_LENGTH);
    }
    for (k = 0; k < MU(NUM_CLASSES); k++) {
        long v;
        if (MU(SCORE_BITS) == 8) {
            v = (long)(int8_t)msg[MU(MSG_HEADER_BYTES) + k];
        } else {
            v = (long)(int16_t)(uint16_t)(msg[MU(MSG_HEADER_BYTES) + 2 * k] | (msg[MU(MSG_HEADER_BYTES) + 2 * k + 1] << 8));
        }
        if (v < -(long)MU(SCORE_MAX)) {
            return MU(MSG_ERR_VALUE);
        }
    }
    return 0;
}

static int M(expected_features_code)(const uint8_t *msg, size_t len)
{
    const unsigned nbits = MU(FEATURE_C) * MU(FEATURE_H) * MU(FEATURE_W);
    if (len < MU(MSG_HEADER_BYTES)) {
        return MU(MSG_ERR_LENGTH);
    }
    if ((msg[0] >> 6) != MU(MSG_FEATURES)) {
        return MU(MSG_ERR_TYPE);
    }
    if ((msg[0] & 0x3F) >= MU(NUM_DEVICES)) {
        return MU(MSG_ERR_SENDER);
    }
    if (len != MU(FEATURES_MSG_BYTES)) {
        return MU(MSG_ERR_LENGTH);
    }
    if (nbits % 8u && (msg[len - 1] >> (nbits % 8u)) != 0) {
        return MU(MSG_ERR_PADDING);
    }
    return 0;
}

static void M(fuzz_one)(const uint8_t *data, size_t size)
{
    const size_t K = MU(NUM_CLASSES), D = MU(NUM_DEVICES), SB = MU(SCORES_MSG_BYTES);
    uint8_t *msg = (uint8_t *)malloc(size ? size : 1);
    M(score_t) *q = (M(score_t) *)malloc(sizeof(M(score_t)) * K);
    M(score_t) *qall = (M(score_t) *)malloc(sizeof(M(score_t)) * K * D);
    uint8_t *present = (uint8_t *)malloc(D);
    int32_t *agg = (int32_t *)malloc(sizeof(int32_t) * K);
    int32_t *scores = (int32_t *)malloc(sizeof(int32_t) * K);
    uint8_t *out = (uint8_t *)malloc(SB > MU(FEATURES_MSG_BYTES) ? SB : MU(FEATURES_MSG_BYTES));
    uint8_t *packed = (uint8_t *)malloc((size_t)MU(FEATURE_H) * MU(FEATURE_W) * ((MU(FEATURE_C) + 7u) / 8u));
    M(local_result_t) result;
    int device = -1, rc, count = 0, best;
    uint16_t seq = 0;
    size_t k, d;
    CHECK(msg && q && qall && present && agg && scores && out && packed, "out of memory");
    if (size) {
        memcpy(msg, data, size);
    }

    /* 1. the whole input as one scores message: the code the format prescribes */
    rc = M(decode_scores)(msg, size, &device, &seq, q);
    CHECK(rc == M(expected_scores_code)(msg, size), "decode_scores: another code than the format prescribes");
    if (rc == 0) { /* accepted: the fields read back give the same bytes */
        CHECK(device >= 0 && (size_t)device < D, "decode_scores: device out of range");
        CHECK(seq == (uint16_t)(msg[1] | (msg[2] << 8)), "decode_scores: wrong sequence number");
        CHECK(msg[0] == (uint8_t)((MU(MSG_SCORES) << 6) | device), "decode_scores: wrong header");
        for (k = 0; k < K; k++) {
            unsigned u = (unsigned)(uint16_t)(int16_t)q[k];
            CHECK(q[k] >= -MU(SCORE_MAX) && q[k] <= MU(SCORE_MAX), "decode_scores: score out of range");
            if (MU(SCORE_BITS) == 8) {
                CHECK(msg[3 + k] == (uint8_t)u, "decode_scores: score differs from its bytes");
            } else {
                CHECK(msg[3 + 2 * k] == (uint8_t)(u & 0xFFu) && msg[4 + 2 * k] == (uint8_t)(u >> 8),
                      "decode_scores: score differs from its bytes");
            }
        }
    }
    /* ... and as one features message */
    rc = M(check_features)(msg, size, &device, &seq);
    CHECK(rc == M(expected_features_code)(msg, size), "check_features: another code than the format prescribes");
    CHECK(M(decode_scores)(NULL, size, &device, &seq, q) == MU(MSG_ERR_NULL), "decode_scores(NULL): no ERR_NULL");
    CHECK(M(check_features)(msg, size, NULL, &seq) == MU(MSG_ERR_NULL), "check_features(NULL): no ERR_NULL");

    /* 2. the input cut into D scores messages -> the gateway's local exit */
    memset(present, 0, D);
    memset(qall, 0, sizeof(M(score_t)) * K * D);
    for (d = 0; d < D && (d + 1) * SB <= size; d++) {
        uint8_t m[MU(SCORES_MSG_BYTES)];
        memcpy(m, data + d * SB, SB);
        m[0] = (uint8_t)((m[0] & 0x80u) ? m[0] : ((MU(MSG_SCORES) << 6) | (m[0] % MU(NUM_DEVICES))));
        if (M(decode_scores)(m, SB, &device, &seq, q) == 0 && !present[device]) {
            present[device] = 1;
            memcpy(qall + (size_t)device * K, q, sizeof(M(score_t)) * K);
            count++;
        }
    }
    best = M(local_exit)(qall, present, MU(LOCAL_THRESHOLD), &result);
    CHECK(best >= 0 && (size_t)best < K && best == result.pred, "local_exit: prediction out of range");
    CHECK(result.count == count, "local_exit: wrong device count");
    CHECK(result.eta >= 0.0f && result.eta <= 1.0f, "local_exit: entropy outside [0, 1] (or NaN)");
    CHECK(result.exit == (count > 0 && result.eta < MU(LOCAL_THRESHOLD)), "local_exit: wrong exit decision");
    CHECK(M(local_aggregate)(qall, present, agg) == count, "local_aggregate: wrong count");
    CHECK(M(local_exit)(qall, NULL, 0.5f, &result) == MU(MSG_ERR_NULL), "local_exit(NULL): no ERR_NULL");

    /* 3. encode -> decode: any int32 scores and any feature bits give an accepted message */
    for (k = 0; k < K; k++) {
        uint32_t v = 0;
        size_t j;
        for (j = 0; j < 4; j++) {
            v = (v << 8) | (size ? data[(4 * k + j) % size] : 0u);
        }
        scores[k] = (int32_t)v;
    }
    device = size ? (int)(data[0] % D) : 0;
    rc = M(encode_scores)(device, scores, (uint16_t)(size * 2654435761u), out);
    CHECK(rc == (int)SB, "encode_scores: wrong length");
    CHECK(M(decode_scores)(out, SB, &device, &seq, q) == 0, "encode_scores: its message is rejected");
    CHECK(seq == (uint16_t)(size * 2654435761u), "encode_scores: sequence number lost");
    for (k = 0; k < (size_t)MU(FEATURE_H) * MU(FEATURE_W) * ((MU(FEATURE_C) + 7u) / 8u); k++) {
        packed[k] = size ? data[(k * 7u) % size] : 0u;
    }
    rc = M(encode_features)(device, packed, 7, out);
    CHECK(rc == MU(FEATURES_MSG_BYTES), "encode_features: wrong length");
    CHECK(M(check_features)(out, (size_t)rc, &device, &seq) == 0, "encode_features: its message is rejected");
    CHECK(M(encode_scores)((int)D, scores, 0, out) == MU(MSG_ERR_SENDER), "encode_scores(D): no ERR_SENDER");

    free(msg);
    free(q);
    free(qall);
    free(present);
    free(agg);
    free(scores);
    free(out);
    free(packed);
}
