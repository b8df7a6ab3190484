#ifndef MRLEASED_CRDMA_SHIM_H
#define MRLEASED_CRDMA_SHIM_H

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

/*
 * Swift cannot call function-like macros or some always_inline helpers from
 * verbs.h. ibv_reg_mr is a macro over __ibv_reg_mr that picks ibv_reg_mr_iova2
 * when optional access flags are set; calling ibv_reg_mr_iova2 directly gives
 * the same behaviour for every access mask.
 */
static inline struct ibv_mr *mrl_reg_mr(struct ibv_pd *pd, void *addr,
                                        size_t length, unsigned int access) {
    return ibv_reg_mr_iova2(pd, addr, length, (uint64_t)(uintptr_t)addr, access);
}

static inline int mrl_query_device_ex(struct ibv_context *ctx,
                                      struct ibv_device_attr_ex *attr) {
    return ibv_query_device_ex(ctx, NULL, attr);
}

static inline int mrl_query_port(struct ibv_context *ctx, uint8_t port,
                                 struct ibv_port_attr *attr) {
    return ibv_query_port(ctx, port, attr);
}

#endif
