/*
 * blipmq-dpdk-sys C shim: see shim.h. Each function is a one-line wrapper
 * around a DPDK static-inline function or macro; nothing here keeps state.
 */
#include <stdalign.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_memzone.h>
#include <rte_mempool.h>

#include "shim.h"

uint16_t blipmq_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			     struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t blipmq_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			     struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

uint16_t blipmq_eth_tx_prepare(uint16_t port_id, uint16_t queue_id,
			       struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_prepare(port_id, queue_id, tx_pkts, nb_pkts);
}

void blipmq_eth_conf_set_intr_rxq(struct rte_eth_conf *conf, int on)
{
	conf->intr_conf.rxq = on ? 1 : 0;
}

int blipmq_eth_link_get_nowait(uint16_t port_id, uint32_t *speed, int *up,
			       int *full_duplex, int *autoneg)
{
	struct rte_eth_link link;
	int ret;

	memset(&link, 0, sizeof(link));
	ret = rte_eth_link_get_nowait(port_id, &link);
	if (ret == 0) {
		*speed = link.link_speed;
		*up = link.link_status == RTE_ETH_LINK_UP;
		*full_duplex = link.link_duplex == RTE_ETH_LINK_FULL_DUPLEX;
		*autoneg = link.link_autoneg == RTE_ETH_LINK_AUTONEG;
	}
	return ret;
}

struct rte_mbuf *blipmq_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

void blipmq_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

int blipmq_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			      unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void *blipmq_pktmbuf_mtod(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t blipmq_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t blipmq_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

char *blipmq_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

char *blipmq_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len);
}

char *blipmq_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len);
}

int blipmq_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

void blipmq_pktmbuf_reset(struct rte_mbuf *m)
{
	rte_pktmbuf_reset(m);
}

uint16_t blipmq_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t blipmq_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

struct rte_mbuf *blipmq_pktmbuf_lastseg(struct rte_mbuf *m)
{
	return rte_pktmbuf_lastseg(m);
}

int blipmq_pktmbuf_is_contiguous(const struct rte_mbuf *m)
{
	return rte_pktmbuf_is_contiguous(m);
}

int blipmq_mbuf_is_direct(const struct rte_mbuf *m)
{
	return RTE_MBUF_DIRECT(m);
}

uint64_t blipmq_mbuf_ol_flags(const struct rte_mbuf *m)
{
	return m->ol_flags;
}

void blipmq_mbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags)
{
	m->ol_flags = flags;
}

void blipmq_mbuf_set_l2_len(struct rte_mbuf *m, uint64_t len)
{
	m->l2_len = len;
}

void blipmq_mbuf_set_l3_len(struct rte_mbuf *m, uint64_t len)
{
	m->l3_len = len;
}

void blipmq_mbuf_set_l4_len(struct rte_mbuf *m, uint64_t len)
{
	m->l4_len = len;
}

uint64_t blipmq_mbuf_l2_len(const struct rte_mbuf *m)
{
	return m->l2_len;
}

uint64_t blipmq_mbuf_l3_len(const struct rte_mbuf *m)
{
	return m->l3_len;
}

uint64_t blipmq_mbuf_l4_len(const struct rte_mbuf *m)
{
	return m->l4_len;
}

uint16_t blipmq_mbuf_refcnt_read(const struct rte_mbuf *m)
{
	return rte_mbuf_refcnt_read(m);
}

uint16_t blipmq_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value)
{
	return rte_mbuf_refcnt_update(m, value);
}

int blipmq_mempool_cache_len(struct rte_mempool *mp)
{
	struct rte_mempool_cache *cache =
		rte_mempool_default_cache(mp, rte_lcore_id());

	return cache == NULL ? -1 : (int)cache->len;
}

unsigned int blipmq_lcore_id(void)
{
	return rte_lcore_id();
}

unsigned int blipmq_socket_id(void)
{
	return rte_socket_id();
}

int blipmq_errno(void)
{
	return rte_errno;
}

void blipmq_set_errno(int value)
{
	rte_errno = value;
}

#define SIZE(t) { "sizeof " #t, sizeof(struct t) }
#define ALIGN(t) { "alignof " #t, alignof(struct t) }
#define OFF(t, f) { #t "." #f, offsetof(struct t, f) }

static const struct blipmq_named_value layout[] = {
	SIZE(rte_mbuf),
	ALIGN(rte_mbuf),
	OFF(rte_mbuf, buf_addr),
	OFF(rte_mbuf, data_off),
	OFF(rte_mbuf, refcnt),
	OFF(rte_mbuf, nb_segs),
	OFF(rte_mbuf, port),
	OFF(rte_mbuf, ol_flags),
	OFF(rte_mbuf, packet_type),
	OFF(rte_mbuf, pkt_len),
	OFF(rte_mbuf, data_len),
	OFF(rte_mbuf, vlan_tci),
	OFF(rte_mbuf, buf_len),
	OFF(rte_mbuf, pool),
	OFF(rte_mbuf, next),
	OFF(rte_mbuf, tx_offload),
	OFF(rte_mbuf, shinfo),
	OFF(rte_mbuf, priv_size),

	SIZE(rte_eth_conf),
	ALIGN(rte_eth_conf),
	OFF(rte_eth_conf, link_speeds),
	OFF(rte_eth_conf, rxmode),
	OFF(rte_eth_conf, txmode),
	OFF(rte_eth_conf, lpbk_mode),
	OFF(rte_eth_conf, rx_adv_conf),
	OFF(rte_eth_conf, tx_adv_conf),
	OFF(rte_eth_conf, dcb_capability_en),
	OFF(rte_eth_conf, intr_conf),
	SIZE(rte_eth_rxmode),
	OFF(rte_eth_rxmode, mq_mode),
	OFF(rte_eth_rxmode, mtu),
	OFF(rte_eth_rxmode, offloads),
	SIZE(rte_eth_txmode),
	OFF(rte_eth_txmode, mq_mode),
	OFF(rte_eth_txmode, offloads),
	SIZE(rte_eth_rss_conf),
	OFF(rte_eth_rss_conf, rss_key),
	OFF(rte_eth_rss_conf, rss_key_len),
	OFF(rte_eth_rss_conf, rss_hf),
	SIZE(rte_eth_intr_conf),

	SIZE(rte_eth_dev_info),
	ALIGN(rte_eth_dev_info),
	OFF(rte_eth_dev_info, device),
	OFF(rte_eth_dev_info, driver_name),
	OFF(rte_eth_dev_info, if_index),
	OFF(rte_eth_dev_info, min_mtu),
	OFF(rte_eth_dev_info, max_mtu),
	OFF(rte_eth_dev_info, max_rx_pktlen),
	OFF(rte_eth_dev_info, max_rx_queues),
	OFF(rte_eth_dev_info, max_tx_queues),
	OFF(rte_eth_dev_info, rx_offload_capa),
	OFF(rte_eth_dev_info, tx_offload_capa),
	OFF(rte_eth_dev_info, reta_size),
	OFF(rte_eth_dev_info, flow_type_rss_offloads),
	OFF(rte_eth_dev_info, default_rxconf),
	OFF(rte_eth_dev_info, default_txconf),
	OFF(rte_eth_dev_info, rx_desc_lim),
	OFF(rte_eth_dev_info, tx_desc_lim),
	OFF(rte_eth_dev_info, speed_capa),
	OFF(rte_eth_dev_info, nb_rx_queues),
	OFF(rte_eth_dev_info, nb_tx_queues),
	OFF(rte_eth_dev_info, dev_capa),

	SIZE(rte_eth_stats),
	ALIGN(rte_eth_stats),
	OFF(rte_eth_stats, ipackets),
	OFF(rte_eth_stats, opackets),
	OFF(rte_eth_stats, ibytes),
	OFF(rte_eth_stats, obytes),
	OFF(rte_eth_stats, imissed),
	OFF(rte_eth_stats, ierrors),
	OFF(rte_eth_stats, oerrors),
	OFF(rte_eth_stats, rx_nombuf),
	OFF(rte_eth_stats, q_ipackets),
	OFF(rte_eth_stats, q_opackets),
	OFF(rte_eth_stats, q_ibytes),
	OFF(rte_eth_stats, q_obytes),
	OFF(rte_eth_stats, q_errors),

	SIZE(rte_eth_xstat),
	OFF(rte_eth_xstat, id),
	OFF(rte_eth_xstat, value),
	SIZE(rte_eth_xstat_name),
	OFF(rte_eth_xstat_name, name),

	SIZE(rte_eth_rxconf),
	ALIGN(rte_eth_rxconf),
	OFF(rte_eth_rxconf, rx_thresh),
	OFF(rte_eth_rxconf, rx_free_thresh),
	OFF(rte_eth_rxconf, rx_drop_en),
	OFF(rte_eth_rxconf, rx_deferred_start),
	OFF(rte_eth_rxconf, rx_nseg),
	OFF(rte_eth_rxconf, offloads),
	OFF(rte_eth_rxconf, rx_seg),
	OFF(rte_eth_rxconf, rx_mempools),
	OFF(rte_eth_rxconf, rx_nmempool),

	SIZE(rte_eth_txconf),
	ALIGN(rte_eth_txconf),
	OFF(rte_eth_txconf, tx_thresh),
	OFF(rte_eth_txconf, tx_rs_thresh),
	OFF(rte_eth_txconf, tx_free_thresh),
	OFF(rte_eth_txconf, tx_deferred_start),
	OFF(rte_eth_txconf, offloads),

	SIZE(rte_ether_addr),
	ALIGN(rte_ether_addr),
	OFF(rte_ether_addr, addr_bytes),

	SIZE(rte_eth_link),
	ALIGN(rte_eth_link),
	OFF(rte_eth_link, link_speed),

	SIZE(rte_memzone),
	OFF(rte_memzone, name),
	OFF(rte_memzone, iova),
	OFF(rte_memzone, addr),
	OFF(rte_memzone, len),
	OFF(rte_memzone, socket_id),
	OFF(rte_memzone, flags),
};

const struct blipmq_named_value *blipmq_layout(size_t *len)
{
	*len = sizeof(layout) / sizeof(layout[0]);
	return layout;
}

#define CONST(c) { #c, (uint64_t)(c) }

static const struct blipmq_named_value consts[] = {
	CONST(RTE_MBUF_F_RX_IP_CKSUM_GOOD),
	CONST(RTE_MBUF_F_RX_IP_CKSUM_BAD),
	CONST(RTE_MBUF_F_RX_IP_CKSUM_MASK),
	CONST(RTE_MBUF_F_RX_L4_CKSUM_GOOD),
	CONST(RTE_MBUF_F_RX_L4_CKSUM_BAD),
	CONST(RTE_MBUF_F_RX_L4_CKSUM_MASK),
	CONST(RTE_MBUF_F_RX_RSS_HASH),
	CONST(RTE_MBUF_F_TX_IPV4),
	CONST(RTE_MBUF_F_TX_IP_CKSUM),
	CONST(RTE_MBUF_F_TX_TCP_CKSUM),
	CONST(RTE_MBUF_F_INDIRECT),
	CONST(RTE_ETH_RX_OFFLOAD_IPV4_CKSUM),
	CONST(RTE_ETH_RX_OFFLOAD_TCP_CKSUM),
	CONST(RTE_ETH_RX_OFFLOAD_CHECKSUM),
	CONST(RTE_ETH_TX_OFFLOAD_IPV4_CKSUM),
	CONST(RTE_ETH_TX_OFFLOAD_TCP_CKSUM),
	CONST(RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE),
	CONST(RTE_ETH_RSS_IPV4),
	CONST(RTE_ETH_RSS_NONFRAG_IPV4_TCP),
	CONST(RTE_ETH_RSS_IP),
	CONST(RTE_ETH_RSS_TCP),
	CONST(RTE_ETH_RSS_UDP),
	CONST(RTE_ETH_LINK_UP),
	CONST(RTE_ETH_LINK_FULL_DUPLEX),
	CONST(RTE_ETH_LINK_SPEED_10G),
	CONST(RTE_ETH_DEV_CAPA_RUNTIME_RX_QUEUE_SETUP),
};

const struct blipmq_named_value *blipmq_consts(size_t *len)
{
	*len = sizeof(consts) / sizeof(consts[0]);
	return consts;
}
