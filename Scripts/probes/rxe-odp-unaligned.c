// Does an RDMA WRITE into an ODP MR land at the offset it was aimed at, and does an RDMA READ
// from one return the bytes at its offset? Reproducer for rxe's ODP copy (docs/kernel-matrix.md).
//
// usage: rxe-odp-unaligned [DEVICE [OFFSET [LENGTH [MTU]]]]   (defaults: first device, 100, 5000, 1024)
// Build:  cc -o rxe-odp-unaligned rxe-odp-unaligned.c -libverbs
// One loopback RC QP pair on port 1 (GID ::ffff:127.0.0.1 when present, else index 0), a pinned
// source/sink MR and an ODP MR of 3 pages over anonymous memory filled with 0x00. The source
// holds bytes 1..251 repeating. WRITE LENGTH bytes to ODP offset OFFSET; print the completion,
// how many bytes differ, where the first 64 written bytes landed, and the first bytes of each
// page. Then the CPU fills the ODP MR with a second pattern; READ the same range into the sink
// and compare. Exit 0 when both are intact, 1 when either is not, 2 on a verbs failure.
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 3
#define die(what) do { perror(what); exit(2); } while (0)

static struct ibv_cq *cq;

// 1..255 from a multiplicative hash: any 16 bytes name where they came from.
static uint8_t pattern(uint32_t i, uint32_t seed) {
    uint32_t x = i * 2654435761u + seed * 40503u;
    x ^= x >> 16;
    return x % 255 + 1;
}

static struct ibv_wc post_and_wait(struct ibv_qp *qp, enum ibv_wr_opcode op, struct ibv_mr *local,
                                   uint32_t length, uint64_t remote, uint32_t rkey) {
    struct ibv_sge sge = { .addr = (uintptr_t)local->addr, .length = length, .lkey = local->lkey };
    struct ibv_send_wr wr = { .wr_id = op, .sg_list = &sge, .num_sge = 1, .opcode = op,
                              .send_flags = IBV_SEND_SIGNALED }, *bad;
    wr.wr.rdma.remote_addr = remote;
    wr.wr.rdma.rkey = rkey;
    if (ibv_post_send(qp, &wr, &bad)) die("ibv_post_send");
    struct ibv_wc wc;
    int n;
    while ((n = ibv_poll_cq(cq, 1, &wc)) == 0) usleep(1000);
    if (n < 0) die("ibv_poll_cq");
    return wc;
}

static void where_from(const uint8_t *odp, int at, const uint8_t *written, int length, int offset) {
    for (int k = 0; k + 16 <= length; k++)
        if (!memcmp(odp + at, written + k, 16)) {
            printf("  ODP offset %5d holds written bytes %d... (aimed at offset %d)\n", at, k, offset + k);
            return;
        }
    printf("  ODP offset %5d holds no written bytes\n", at);
}

static void to_rts(struct ibv_qp *qp, uint32_t remote_qpn, union ibv_gid gid, int gid_index, enum ibv_mtu mtu) {
    struct ibv_qp_attr a = { .qp_state = IBV_QPS_INIT, .port_num = 1,
                             .qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ };
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) die("INIT");
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTR; a.path_mtu = mtu; a.dest_qp_num = remote_qpn;
    a.max_dest_rd_atomic = 1; a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1; a.ah_attr.port_num = 1;
    a.ah_attr.grh.dgid = gid; a.ah_attr.grh.sgid_index = gid_index; a.ah_attr.grh.hop_limit = 1;
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN
                      | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) die("RTR");
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTS; a.timeout = 14; a.retry_cnt = 7; a.rnr_retry = 7; a.max_rd_atomic = 1;
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY
                      | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC)) die("RTS");
}

static int report(const char *what, const uint8_t *got, const uint8_t *want, int length) {
    int wrong = 0, first = -1;
    for (int i = 0; i < length; i++)
        if (got[i] != want[i]) { wrong++; if (first < 0) first = i; }
    printf("%s: %d of %d bytes differ", what, wrong, length);
    if (first >= 0) printf(", first at byte %d (got 0x%02x, want 0x%02x)", first, got[first], want[first]);
    printf("\n");
    return wrong != 0;
}

int main(int argc, char **argv) {
    int offset = argc > 2 ? atoi(argv[2]) : 100, length = argc > 3 ? atoi(argv[3]) : 5000;
    int mtu_bytes = argc > 4 ? atoi(argv[4]) : 1024;
    enum ibv_mtu mtu = mtu_bytes == 4096 ? IBV_MTU_4096 : mtu_bytes == 2048 ? IBV_MTU_2048
                     : mtu_bytes == 512 ? IBV_MTU_512 : mtu_bytes == 256 ? IBV_MTU_256 : IBV_MTU_1024;
    if (offset < 0 || length <= 0 || offset + length > PAGES * PAGE) { fprintf(stderr, "range outside %d bytes\n", PAGES * PAGE); return 2; }

    struct ibv_device **list = ibv_get_device_list(NULL);
    if (!list || !list[0]) die("ibv_get_device_list");
    struct ibv_device *device = list[0];
    for (int i = 0; argc > 1 && list[i]; i++)
        if (!strcmp(ibv_get_device_name(list[i]), argv[1])) device = list[i];
    struct ibv_context *ctx = ibv_open_device(device);
    if (!ctx) die("ibv_open_device");
    struct ibv_device_attr_ex attr;
    if (ibv_query_device_ex(ctx, NULL, &attr)) die("ibv_query_device_ex");
    uint32_t rc = attr.odp_caps.per_transport_caps.rc_odp_caps;
    printf("device %s, ODP %s, RC ODP caps 0x%x; offset %d, length %d, path MTU %d\n", ibv_get_device_name(device),
           attr.odp_caps.general_caps & IBV_ODP_SUPPORT ? "yes" : "no", rc, offset, length, mtu_bytes);
    if (!(rc & IBV_ODP_SUPPORT_WRITE) || !(rc & IBV_ODP_SUPPORT_READ)) { printf("no RC ODP WRITE/READ: nothing to test\n"); return 0; }

    int gid_index = 0;
    union ibv_gid gid, candidate;
    static const uint8_t loopback[16] = { [10] = 0xff, [11] = 0xff, 127, 0, 0, 1 };
    for (int i = 0; i < 16 && !ibv_query_gid(ctx, 1, i, &candidate); i++)
        if (!memcmp(candidate.raw, loopback, 16)) gid_index = i;
    if (ibv_query_gid(ctx, 1, gid_index, &gid)) die("ibv_query_gid");

    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    if (!pd) die("ibv_alloc_pd");
    cq = ibv_create_cq(ctx, 4, NULL, NULL, 0);
    if (!cq) die("ibv_create_cq");
    struct ibv_qp_init_attr init = { .send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 1,
                                     .cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 } };
    struct ibv_qp *initiator = ibv_create_qp(pd, &init), *target = ibv_create_qp(pd, &init);
    if (!initiator || !target) die("ibv_create_qp");
    to_rts(initiator, target->qp_num, gid, gid_index, mtu);
    to_rts(target, initiator->qp_num, gid, gid_index, mtu);

    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    uint8_t *odp = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *pinned = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (odp == MAP_FAILED || pinned == MAP_FAILED) die("mmap");
    memset(odp, 0, PAGES * PAGE);
    for (int i = 0; i < length; i++) pinned[i] = pattern(i, 1);
    struct ibv_mr *odp_mr = ibv_reg_mr(pd, odp, PAGES * PAGE, access | IBV_ACCESS_ON_DEMAND);
    struct ibv_mr *pinned_mr = ibv_reg_mr(pd, pinned, PAGES * PAGE, access);
    if (!odp_mr || !pinned_mr) die("ibv_reg_mr");

    struct ibv_wc wc = post_and_wait(initiator, IBV_WR_RDMA_WRITE, pinned_mr, length, (uintptr_t)odp + offset, odp_mr->rkey);
    printf("RDMA WRITE completion: %s, byte_len %u\n", ibv_wc_status_str(wc.status), wc.byte_len);
    int bad = report("WRITE", odp + offset, pinned, length);
    // Where each page's first bytes, and the bytes at the aimed in-page offset, came from.
    for (int at = 0; at < PAGES * PAGE; at += PAGE) {
        where_from(odp, at, pinned, length, offset);
        if (offset % PAGE) where_from(odp, at + offset % PAGE, pinned, length, offset);
    }

    for (int i = 0; i < PAGES * PAGE; i++) odp[i] = pattern(i, 2);
    memset(pinned, 0, PAGES * PAGE);
    wc = post_and_wait(initiator, IBV_WR_RDMA_READ, pinned_mr, length, (uintptr_t)odp + offset, odp_mr->rkey);
    printf("RDMA READ completion: %s, byte_len %u\n", ibv_wc_status_str(wc.status), wc.byte_len);
    bad |= report("READ", pinned, odp + offset, length);
    int page_start = offset / PAGE * PAGE;
    if (memcmp(pinned, odp + offset, 64) && !memcmp(pinned, odp + page_start, 64))
        printf("  the READ returned the bytes at the page start (ODP offset %d), not at %d\n", page_start, offset);

    ibv_destroy_qp(initiator); ibv_destroy_qp(target);
    ibv_dereg_mr(odp_mr); ibv_dereg_mr(pinned_mr);
    ibv_destroy_cq(cq); ibv_dealloc_pd(pd); ibv_close_device(ctx); ibv_free_device_list(list);
    printf("%s\n", bad ? "CORRUPT" : "intact");
    return bad;
}
