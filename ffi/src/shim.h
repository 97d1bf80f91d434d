/*
 * blipmq-dpdk-sys C shim: DPDK's static-inline fast path (and bitfield
 * accessors) exported as real functions under blipmq_ names so that Rust can
 * call them. Compiled by build.rs with the cc crate and every flag of
 * `pkg-config --cflags libdpdk`; bound by bindgen like the DPDK headers.
 */
#ifndef BLIPMQ_DPDK_SHIM_H
#define BLIPMQ_DPDK_SHIM_H

#include <stddef.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_eth_conf;

/* --- ethdev fast path --- */
uint16_t blipmq_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			     struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t blipmq_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			     struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
uint16_t blipmq_eth_tx_prepare(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

/* --- ethdev bitfields --- */
/* rte_eth_conf.intr_conf.rxq (a bitfield). */
void blipmq_eth_conf_set_intr_rxq(struct rte_eth_conf *conf, int on);
/* rte_eth_link_get_nowait with the bitfields unpacked; returns its result. */
int blipmq_eth_link_get_nowait(uint16_t port_id, uint32_t *speed, int *up,
			       int *full_duplex, int *autoneg);

/* --- mbuf --- */
struct rte_mbuf *blipmq_pktmbuf_alloc(struct rte_mempool *mp);
void blipmq_pktmbuf_free(struct rte_mbuf *m);
int blipmq_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			      unsigned int count);
void *blipmq_pktmbuf_mtod(const struct rte_mbuf *m);
uint16_t blipmq_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t blipmq_pktmbuf_pkt_len(const struct rte_mbuf *m);
char *blipmq_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *blipmq_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *blipmq_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int blipmq_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
void blipmq_pktmbuf_reset(struct rte_mbuf *m);
uint16_t blipmq_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t blipmq_pktmbuf_tailroom(const struct rte_mbuf *m);
struct rte_mbuf *blipmq_pktmbuf_lastseg(struct rte_mbuf *m);
int blipmq_pktmbuf_is_contiguous(const struct rte_mbuf *m);
/* RTE_MBUF_DIRECT(m): neither attached to another mbuf nor to an external buffer. */
int blipmq_mbuf_is_direct(const struct rte_mbuf *m);
uint64_t blipmq_mbuf_ol_flags(const struct rte_mbuf *m);
void blipmq_mbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags);
/* tx_offload bitfields */
void blipmq_mbuf_set_l2_len(struct rte_mbuf *m, uint64_t len);
void blipmq_mbuf_set_l3_len(struct rte_mbuf *m, uint64_t len);
void blipmq_mbuf_set_l4_len(struct rte_mbuf *m, uint64_t len);
uint64_t blipmq_mbuf_l2_len(const struct rte_mbuf *m);
uint64_t blipmq_mbuf_l3_len(const struct rte_mbuf *m);
uint64_t blipmq_mbuf_l4_len(const struct rte_mbuf *m);
uint16_t blipmq_mbuf_refcnt_read(const struct rte_mbuf *m);
uint16_t blipmq_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);

/* --- mempool --- */
/* Length of the calling lcore's default cache of mp, -1 when it has none
 * (an unregistered thread, or a pool without caches). */
int blipmq_mempool_cache_len(struct rte_mempool *mp);

/* --- lcore / errno --- */
unsigned int blipmq_lcore_id(void);
unsigned int blipmq_socket_id(void);
int blipmq_errno(void);
void blipmq_set_errno(int value);

/* --- introspection for the tests: what the C compiler computed --- */
struct blipmq_named_value {
	const char *name;
	uint64_t value;
};
/* "sizeof T", "alignof T" and "T.field" (offsetof) for the structs the
 * safe layer uses. */
const struct blipmq_named_value *blipmq_layout(size_t *len);
/* A few RTE_* flag constants as this compiler evaluates them. */
const struct blipmq_named_value *blipmq_consts(size_t *len);

#endif
