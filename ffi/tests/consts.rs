//! The RTE_* flag constants generated at build time against the values the
//! shim (compiled separately, by the C compiler) exports.

mod common;

#[cfg(blipmq_dpdk_missing)]
#[test]
fn consts() {
    common::dpdk_missing();
}

#[cfg(not(blipmq_dpdk_missing))]
#[test]
fn generated_constants_match_the_shim() {
    use blipmq_dpdk_sys::sys::{self, consts::ALL};
    use std::ffi::CStr;

    let mut len = 0usize;
    // SAFETY: blipmq_consts returns a static array of `len` entries whose
    // names are static C strings.
    let table = unsafe { std::slice::from_raw_parts(sys::blipmq_consts(&mut len), len) };
    assert!(len >= 20, "the shim exports {len} constants");
    for e in table {
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(e.name) }.to_str().unwrap();
        let rust = ALL
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} was not generated"))
            .1;
        assert_eq!(
            rust, e.value,
            "{name}: generated {rust:#x}, shim {:#x}",
            e.value
        );
    }
}

#[cfg(not(blipmq_dpdk_missing))]
#[test]
fn a_few_known_values() {
    use blipmq_dpdk_sys::sys::*;

    // Values from DPDK 22.11's rte_mbuf_core.h / rte_ethdev.h.
    assert_eq!(RTE_MBUF_F_TX_IPV4, 1 << 55);
    assert_eq!(RTE_MBUF_F_TX_IP_CKSUM, 1 << 54);
    assert_eq!(RTE_MBUF_F_TX_TCP_CKSUM, 1 << 52);
    assert_eq!(RTE_MBUF_F_RX_L4_CKSUM_GOOD, 1 << 8);
    assert_eq!(RTE_MBUF_F_RX_IP_CKSUM_GOOD, 1 << 7);
    assert_eq!(RTE_MBUF_F_RX_L4_CKSUM_MASK, (1 << 3) | (1 << 8));
    assert_eq!(RTE_ETH_RX_OFFLOAD_IPV4_CKSUM, 1 << 1);
    assert_eq!(RTE_ETH_TX_OFFLOAD_TCP_CKSUM, 1 << 3);
    assert_eq!(RTE_ETH_RSS_IPV4, 1 << 2);
    assert_eq!(RTE_ETH_RSS_NONFRAG_IPV4_TCP, 1 << 4);
    assert_eq!(RTE_ETH_RSS_IP & RTE_ETH_RSS_IPV4, RTE_ETH_RSS_IPV4);
    assert_eq!(
        RTE_ETH_RSS_TCP & RTE_ETH_RSS_NONFRAG_IPV4_TCP,
        RTE_ETH_RSS_NONFRAG_IPV4_TCP
    );
    assert_ne!(RTE_ETH_RSS_UDP, 0);
    assert_eq!(RTE_ETH_LINK_UP, 1);
    assert_eq!(RTE_ETH_LINK_SPEED_10G, 1 << 8);
    // Every TX flag lies in the TX mask, every RX one outside it.
    assert_eq!(RTE_MBUF_F_TX_TCP_CKSUM & !RTE_MBUF_F_TX_OFFLOAD_MASK, 0);
    assert_eq!(RTE_MBUF_F_RX_L4_CKSUM_GOOD & RTE_MBUF_F_TX_OFFLOAD_MASK, 0);
}
