//! Struct layouts as Rust (bindgen) sees them against what the C compiler
//! that built the shim computed: sizes, alignments and field offsets.

mod common;

#[cfg(blipmq_dpdk_missing)]
#[test]
fn layout() {
    common::dpdk_missing();
}

#[cfg(not(blipmq_dpdk_missing))]
#[test]
fn rust_layout_matches_the_c_compiler() {
    use blipmq_dpdk_sys::sys::*;
    use std::collections::BTreeMap;
    use std::ffi::CStr;
    use std::mem::{align_of, offset_of, size_of};

    // What gcc computed (shim.c).
    let mut len = 0usize;
    // SAFETY: blipmq_layout returns a static array of `len` entries whose
    // names are static C strings.
    let c_table = unsafe { std::slice::from_raw_parts(blipmq_layout(&mut len), len) };
    let c: BTreeMap<String, u64> = c_table
        .iter()
        .map(|e| {
            (
                // SAFETY: each entry's name is a static, NUL-terminated C
                // string (see blipmq_layout in shim.c).
                unsafe { CStr::from_ptr(e.name) }
                    .to_str()
                    .unwrap()
                    .to_string(),
                e.value,
            )
        })
        .collect();
    assert_eq!(c.len(), len, "duplicate names in the C table");

    macro_rules! size {
        ($t:ident) => {
            (concat!("sizeof ", stringify!($t)), size_of::<$t>())
        };
    }
    macro_rules! align {
        ($t:ident) => {
            (concat!("alignof ", stringify!($t)), align_of::<$t>())
        };
    }
    macro_rules! off {
        ($t:ident, $f:ident) => {
            (concat!(stringify!($t), ".", stringify!($f)), offset_of!($t, $f))
        };
        // A field inside an anonymous union/struct, which bindgen names.
        ($t:ident, $f:ident => $($path:tt)+) => {
            (concat!(stringify!($t), ".", stringify!($f)), offset_of!($t, $($path)+))
        };
    }
    let rust: Vec<(&str, usize)> = vec![
        size!(rte_mbuf),
        align!(rte_mbuf),
        off!(rte_mbuf, buf_addr),
        off!(rte_mbuf, data_off),
        off!(rte_mbuf, refcnt),
        off!(rte_mbuf, nb_segs),
        off!(rte_mbuf, port),
        off!(rte_mbuf, ol_flags),
        off!(rte_mbuf, packet_type => __bindgen_anon_1.packet_type),
        off!(rte_mbuf, pkt_len),
        off!(rte_mbuf, data_len),
        off!(rte_mbuf, vlan_tci),
        off!(rte_mbuf, buf_len),
        off!(rte_mbuf, pool),
        off!(rte_mbuf, next),
        off!(rte_mbuf, tx_offload => __bindgen_anon_3.tx_offload),
        off!(rte_mbuf, shinfo),
        off!(rte_mbuf, priv_size),
        size!(rte_eth_conf),
        align!(rte_eth_conf),
        off!(rte_eth_conf, link_speeds),
        off!(rte_eth_conf, rxmode),
        off!(rte_eth_conf, txmode),
        off!(rte_eth_conf, lpbk_mode),
        off!(rte_eth_conf, rx_adv_conf),
        off!(rte_eth_conf, tx_adv_conf),
        off!(rte_eth_conf, dcb_capability_en),
        off!(rte_eth_conf, intr_conf),
        size!(rte_eth_rxmode),
        off!(rte_eth_rxmode, mq_mode),
        off!(rte_eth_rxmode, mtu),
        off!(rte_eth_rxmode, offloads),
        size!(rte_eth_txmode),
        off!(rte_eth_txmode, mq_mode),
        off!(rte_eth_txmode, offloads),
        size!(rte_eth_rss_conf),
        off!(rte_eth_rss_conf, rss_key),
        off!(rte_eth_rss_conf, rss_key_len),
        off!(rte_eth_rss_conf, rss_hf),
        size!(rte_eth_intr_conf),
        size!(rte_eth_dev_info),
        align!(rte_eth_dev_info),
        off!(rte_eth_dev_info, device),
        off!(rte_eth_dev_info, driver_name),
        off!(rte_eth_dev_info, if_index),
        off!(rte_eth_dev_info, min_mtu),
        off!(rte_eth_dev_info, max_mtu),
        off!(rte_eth_dev_info, max_rx_pktlen),
        off!(rte_eth_dev_info, max_rx_queues),
        off!(rte_eth_dev_info, max_tx_queues),
        off!(rte_eth_dev_info, rx_offload_capa),
        off!(rte_eth_dev_info, tx_offload_capa),
        off!(rte_eth_dev_info, reta_size),
        off!(rte_eth_dev_info, flow_type_rss_offloads),
        off!(rte_eth_dev_info, default_rxconf),
        off!(rte_eth_dev_info, default_txconf),
        off!(rte_eth_dev_info, rx_desc_lim),
        off!(rte_eth_dev_info, tx_desc_lim),
        off!(rte_eth_dev_info, speed_capa),
        off!(rte_eth_dev_info, nb_rx_queues),
        off!(rte_eth_dev_info, nb_tx_queues),
        off!(rte_eth_dev_info, dev_capa),
        size!(rte_eth_stats),
        align!(rte_eth_stats),
        off!(rte_eth_stats, ipackets),
        off!(rte_eth_stats, opackets),
        off!(rte_eth_stats, ibytes),
        off!(rte_eth_stats, obytes),
        off!(rte_eth_stats, imissed),
        off!(rte_eth_stats, ierrors),
        off!(rte_eth_stats, oerrors),
        off!(rte_eth_stats, rx_nombuf),
        off!(rte_eth_stats, q_ipackets),
        off!(rte_eth_stats, q_opackets),
        off!(rte_eth_stats, q_ibytes),
        off!(rte_eth_stats, q_obytes),
        off!(rte_eth_stats, q_errors),
        size!(rte_eth_xstat),
        off!(rte_eth_xstat, id),
        off!(rte_eth_xstat, value),
        size!(rte_eth_xstat_name),
        off!(rte_eth_xstat_name, name),
        size!(rte_eth_rxconf),
        align!(rte_eth_rxconf),
        off!(rte_eth_rxconf, rx_thresh),
        off!(rte_eth_rxconf, rx_free_thresh),
        off!(rte_eth_rxconf, rx_drop_en),
        off!(rte_eth_rxconf, rx_deferred_start),
        off!(rte_eth_rxconf, rx_nseg),
        off!(rte_eth_rxconf, offloads),
        off!(rte_eth_rxconf, rx_seg),
        off!(rte_eth_rxconf, rx_mempools),
        off!(rte_eth_rxconf, rx_nmempool),
        size!(rte_eth_txconf),
        align!(rte_eth_txconf),
        off!(rte_eth_txconf, tx_thresh),
        off!(rte_eth_txconf, tx_rs_thresh),
        off!(rte_eth_txconf, tx_free_thresh),
        off!(rte_eth_txconf, tx_deferred_start),
        off!(rte_eth_txconf, offloads),
        size!(rte_ether_addr),
        align!(rte_ether_addr),
        off!(rte_ether_addr, addr_bytes),
        size!(rte_eth_link),
        align!(rte_eth_link),
        off!(rte_eth_link, link_speed),
        size!(rte_memzone),
        off!(rte_memzone, name),
        off!(rte_memzone, iova),
        off!(rte_memzone, addr => __bindgen_anon_1.addr),
        off!(rte_memzone, len),
        off!(rte_memzone, socket_id),
        off!(rte_memzone, flags),
    ];

    let mut mismatches = Vec::new();
    for (name, value) in &rust {
        match c.get(*name) {
            Some(&cv) if cv == *value as u64 => {}
            Some(&cv) => mismatches.push(format!("{name}: C {cv}, Rust {value}")),
            None => mismatches.push(format!("{name}: not in the C table")),
        }
    }
    for name in c.keys() {
        if !rust.iter().any(|(n, _)| n == name) {
            mismatches.push(format!("{name}: not checked on the Rust side"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
    // The fast-path reads of the safe layer rely on these.
    assert_eq!(size_of::<rte_mbuf>(), 128);
    assert_eq!(c["rte_mbuf.pkt_len"], offset_of!(rte_mbuf, pkt_len) as u64);
}
