/*
 * librdkafka alone, sending fleetstream's records: the most any librdkafka client can do with
 * them on this machine. A benchmark tool (scripts/bench-producer floor), never a test.
 *
 *   librdkafka-floor RECORDS COUNT [COMPRESSION]
 *
 * RECORDS holds the records a default `fleetstream produce` run sends, one per line
 * (`cargo run --release -p fleetstream-producer --example dump_records`):
 *   topic \t key \t message-id \t traceparent \t produced-at-ms \t payload
 * They are read into memory first; the timed loop then sends COUNT of them, cycling, with
 * nothing else to do: no generation, no metrics, a delivery report callback that only counts.
 * Everything else is set as fleetstream sets it: 3 mock brokers, topics mt-c400 (12 partitions)
 * and mt-c300 (4), acks=all, idempotence, murmur2_random, linger.ms=5, batch.size 1 MiB,
 * lz4 unless COMPRESSION says otherwise, 100,000 / 256 MiB queue bounds, the 4 headers, the
 * record timestamp, one poll every 8 sends, and a 0.7 s wait for the producer id before the
 * clock starts.
 *
 * Environment: FLOOR_FIXED_PAYLOAD=1 sends the first record's payload every time (as
 * rdkafka_performance repeats one payload); FLOOR_ONE_KEY=1 sends the first record's key and
 * topic every time (one partition, as rdkafka_performance -k does). Together they give
 * rdkafka_performance's record shape with fleetstream's headers.
 *
 * Prints one line: "floor: N sent in S s: R msg/s; acked A failed F: D acked/s", D counted
 * from the start of the timed loop to the last delivery report.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdkafka.h"
#include "rdkafka_mock.h"

typedef struct {
        int topic;
        const char *key, *id, *tp, *at, *payload;
        size_t klen, idlen, tplen, atlen, plen;
        long long ts;
} rec_t;

static long long acked, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
        (void)rk;
        (void)opaque;
        if (m->err)
                failed++;
        else
                acked++;
}

static double now(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static rec_t *load(const char *path, size_t *n_out) {
        FILE *f = fopen(path, "r");
        if (!f) {
                perror(path);
                exit(1);
        }
        size_t cap = 1024, n = 0;
        rec_t *recs = malloc(cap * sizeof *recs);
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &lcap, f)) > 0) {
                if (line[len - 1] == '\n')
                        line[--len] = 0;
                char *s = strdup(line), *p[6];
                int k = 1;
                p[0] = s;
                for (char *c = s; *c && k < 6; c++)
                        if (*c == '\t') {
                                *c     = 0;
                                p[k++] = c + 1;
                        }
                if (k != 6) {
                        fprintf(stderr, "%s:%zu: expected 6 tab-separated fields\n", path, n + 1);
                        exit(1);
                }
                if (n == cap)
                        recs = realloc(recs, (cap *= 2) * sizeof *recs);
                rec_t *r   = &recs[n++];
                r->topic   = strcmp(p[0], "mt-c400") == 0 ? 0 : 1;
                r->key     = p[1];
                r->klen    = strlen(p[1]);
                r->id      = p[2];
                r->idlen   = strlen(p[2]);
                r->tp      = p[3];
                r->tplen   = strlen(p[3]);
                r->at      = p[4];
                r->atlen   = strlen(p[4]);
                r->ts      = atoll(p[4]);
                r->payload = p[5];
                r->plen    = strlen(p[5]);
        }
        free(line);
        fclose(f);
        if (n == 0) {
                fprintf(stderr, "%s: no records\n", path);
                exit(1);
        }
        *n_out = n;
        return recs;
}

static void set(rd_kafka_conf_t *conf, const char *key, const char *value) {
        char err[512];
        if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "%s: %s\n", key, err);
                exit(1);
        }
}

int main(int argc, char **argv) {
        if (argc < 3) {
                fprintf(stderr, "usage: %s RECORDS COUNT [COMPRESSION]\n", argv[0]);
                return 2;
        }
        size_t n;
        rec_t *recs         = load(argv[1], &n);
        long long count     = atoll(argv[2]);
        const char *codec   = argc > 3 ? argv[3] : "lz4";
        int fixed_payload   = getenv("FLOOR_FIXED_PAYLOAD") != NULL;
        int one_key         = getenv("FLOOR_ONE_KEY") != NULL;

        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        set(conf, "test.mock.num.brokers", "3");
        set(conf, "acks", "all");
        set(conf, "enable.idempotence", "true");
        set(conf, "partitioner", "murmur2_random");
        set(conf, "linger.ms", "5");
        set(conf, "batch.size", "1048576");
        set(conf, "compression.type", codec);
        set(conf, "queue.buffering.max.messages", "100000");
        set(conf, "queue.buffering.max.kbytes", "262144");
        set(conf, "log_level", "3");
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
        char err[512];
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
        if (!rk) {
                fprintf(stderr, "%s\n", err);
                return 1;
        }
        rd_kafka_mock_cluster_t *mc = rd_kafka_handle_mock_cluster(rk);
        if (rd_kafka_mock_topic_create(mc, "mt-c400", 12, 1) ||
            rd_kafka_mock_topic_create(mc, "mt-c300", 4, 1)) {
                fprintf(stderr, "could not create the mock topics\n");
                return 1;
        }
        rd_kafka_topic_t *rkt[2] = {rd_kafka_topic_new(rk, "mt-c400", NULL),
                                    rd_kafka_topic_new(rk, "mt-c300", NULL)};
        for (double w = now(); now() - w < 0.7;)
                rd_kafka_poll(rk, 10);

        double t0 = now();
        for (long long i = 0; i < count; i++) {
                const rec_t *r = &recs[i % (long long)n];
                const rec_t *p = fixed_payload ? &recs[0] : r;
                const rec_t *k = one_key ? &recs[0] : r;
                rd_kafka_headers_t *h = rd_kafka_headers_new(4);
                rd_kafka_header_add(h, "fs-message-id", -1, r->id, r->idlen);
                rd_kafka_header_add(h, "fs-correlation-id", -1, r->id, r->idlen);
                rd_kafka_header_add(h, "traceparent", -1, r->tp, r->tplen);
                rd_kafka_header_add(h, "fs-produced-at", -1, r->at, r->atlen);
                for (;;) {
                        rd_kafka_resp_err_t e = rd_kafka_producev(
                            rk, RD_KAFKA_V_RKT(rkt[k->topic]),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_VALUE((void *)p->payload, p->plen),
                            RD_KAFKA_V_KEY(k->key, k->klen), RD_KAFKA_V_HEADERS(h),
                            RD_KAFKA_V_TIMESTAMP(r->ts), RD_KAFKA_V_END);
                        if (!e)
                                break;
                        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                                return 1;
                        }
                        rd_kafka_poll(rk, 1); /* backpressure: serve reports, retry */
                }
                if (i % 8 == 0)
                        rd_kafka_poll(rk, 0);
        }
        double t1 = now();
        rd_kafka_flush(rk, 60000);
        double t2 = now();
        printf("floor: %lld sent in %.3f s: %.0f msg/s; acked %lld failed %lld: %.0f acked/s\n",
               count, t1 - t0, (double)count / (t1 - t0), acked, failed,
               (double)acked / (t2 - t0));
        rd_kafka_topic_destroy(rkt[0]);
        rd_kafka_topic_destroy(rkt[1]);
        rd_kafka_destroy(rk);
        return acked == count ? 0 : 1;
}
