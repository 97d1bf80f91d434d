//! Ethernet ports: configuration, queues, the burst fast path, statistics.

use std::cell::Cell;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{check, Error, Result};
use crate::mbuf::{Mbuf, MbufBurst};
use crate::{sys, Eal, Mempool};

/// Number of per-queue counters in [`PortStats`] (`RTE_ETHDEV_QUEUE_STAT_CNTRS`).
pub const QUEUE_STAT_COUNTERS: usize = sys::RTE_ETHDEV_QUEUE_STAT_CNTRS as usize;

const MAX_PORTS: usize = sys::RTE_MAX_ETHPORTS as usize;

/// Which port ids have a live [`Port`]: one handle per port in the process.
static PORT_OPEN: [AtomicBool; MAX_PORTS] = [const { AtomicBool::new(false) }; MAX_PORTS];

/// What a port reports about itself (`rte_eth_dev_info_get` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub port_id: u16,
    pub driver_name: String,
    /// The kernel interface index, 0 when the device has none.
    pub if_index: u32,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// `RTE_ETH_RSS_*` hash types the device can use; 0 when it has no RSS.
    pub flow_type_rss_offloads: u64,
    /// `RTE_ETH_RX_OFFLOAD_*` the device supports.
    pub rx_offload_capa: u64,
    /// `RTE_ETH_TX_OFFLOAD_*` the device supports.
    pub tx_offload_capa: u64,
    pub max_rx_pktlen: u32,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub rx_desc_max: u16,
    pub tx_desc_max: u16,
    /// `RTE_ETH_DEV_CAPA_*`.
    pub dev_capa: u64,
    pub mac: [u8; 6],
    /// The NUMA socket the device is attached to, `None` when unknown.
    pub socket_id: Option<u32>,
}

/// How to configure a port; see [`Port::configure`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortConf {
    /// `RTE_ETH_RSS_*` hash types wanted. Masked with the device's
    /// `flow_type_rss_offloads` (devices without RSS reject any); RSS is
    /// enabled when anything is left.
    pub rss_hf: u64,
    /// `RTE_ETH_RX_OFFLOAD_*` (port level); the device must support them.
    pub rx_offloads: u64,
    /// `RTE_ETH_TX_OFFLOAD_*` (port level); the device must support them.
    pub tx_offloads: u64,
    /// MTU; `None` for DPDK's default (1500).
    pub mtu: Option<u16>,
    /// Enable receive interrupts (`intr_conf.rxq`), for
    /// [`RxQueue::intr_fd`] and friends.
    pub rx_interrupts: bool,
}

/// Link state (`rte_eth_link_get_nowait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    /// Mbit/s (`RTE_ETH_SPEED_NUM_*`), 0 when unknown.
    pub speed_mbps: u32,
    pub full_duplex: bool,
    pub autoneg: bool,
}

/// Basic counters (`rte_eth_stats_get`). The per-queue arrays cover the
/// first [`QUEUE_STAT_COUNTERS`] queues, where the PMD fills them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Received packets dropped by the device (rx ring full, ...).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
    pub q_ipackets: [u64; QUEUE_STAT_COUNTERS],
    pub q_opackets: [u64; QUEUE_STAT_COUNTERS],
    pub q_ibytes: [u64; QUEUE_STAT_COUNTERS],
    pub q_obytes: [u64; QUEUE_STAT_COUNTERS],
    pub q_errors: [u64; QUEUE_STAT_COUNTERS],
}

impl From<&sys::rte_eth_stats> for PortStats {
    fn from(s: &sys::rte_eth_stats) -> Self {
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            q_ipackets: s.q_ipackets,
            q_opackets: s.q_opackets,
            q_ibytes: s.q_ibytes,
            q_obytes: s.q_obytes,
            q_errors: s.q_errors,
        }
    }
}

/// Serialises every ethdev control-path call of the process (DPDK's are not
/// thread-safe, not even across ports: they share the device table). The
/// burst fast path and the per-queue interrupt calls never take it. Lock
/// order: a port's state first, then this.
static ETHDEV: Mutex<()> = Mutex::new(());

pub(crate) fn ethdev_lock() -> MutexGuard<'static, ()> {
    ETHDEV.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Eal {
    /// What port `port_id` reports about itself; no [`Port`] needed.
    pub fn port_info(&self, port_id: u16) -> Result<PortInfo> {
        let _ethdev = ethdev_lock();
        port_info(port_id)
    }
}

/// Needs the [`ETHDEV`] lock held.
fn port_info(port_id: u16) -> Result<PortInfo> {
    let mut di = sys::rte_eth_dev_info::default();
    // SAFETY: di is a valid, writable rte_eth_dev_info; DPDK checks port_id.
    let ret = unsafe { sys::rte_eth_dev_info_get(port_id, &mut di) };
    check(|| format!("rte_eth_dev_info_get(port {port_id})"), ret)?;
    let driver_name = if di.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null driver_name is the driver's static C string.
        unsafe { CStr::from_ptr(di.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut mac = sys::rte_ether_addr::default();
    // SAFETY: mac is a valid, writable rte_ether_addr; the port is valid.
    let ret = unsafe { sys::rte_eth_macaddr_get(port_id, &mut mac) };
    check(|| format!("rte_eth_macaddr_get(port {port_id})"), ret)?;
    // SAFETY: the port is valid; the call only reads its data.
    let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
    Ok(PortInfo {
        port_id,
        driver_name,
        if_index: di.if_index,
        max_rx_queues: di.max_rx_queues,
        max_tx_queues: di.max_tx_queues,
        flow_type_rss_offloads: di.flow_type_rss_offloads,
        rx_offload_capa: di.rx_offload_capa,
        tx_offload_capa: di.tx_offload_capa,
        max_rx_pktlen: di.max_rx_pktlen,
        min_mtu: di.min_mtu,
        max_mtu: di.max_mtu,
        rx_desc_max: di.rx_desc_lim.nb_max,
        tx_desc_max: di.tx_desc_lim.nb_max,
        dev_capa: di.dev_capa,
        mac: mac.addr_bytes,
        socket_id: u32::try_from(socket).ok(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opened, never configured: dropping the port leaves the device alone.
    Opened,
    /// Configured (or stopped): queues may be set up.
    Configured,
    Started,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    setup: bool,
    taken: bool,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    rx: Vec<Slot>,
    tx: Vec<Slot>,
}

/// What a [`Port`] and its queue handles share; the last one to go stops and
/// closes the device.
#[derive(Debug)]
struct Shared {
    id: u16,
    /// Serialises the control-path calls (DPDK's are not thread-safe) and
    /// tracks the queues handed out.
    state: Mutex<State>,
    _eal: Eal,
}

/// A port's state, locked, with the process's [`ETHDEV`] lock: what every
/// control call on the port holds.
struct Control<'a> {
    state: MutexGuard<'a, State>,
    _ethdev: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Control<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Control<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Shared {
    fn lock(&self) -> Control<'_> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Control {
            state,
            _ethdev: ethdev_lock(),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let id = self.id;
        let ctl = self.lock();
        let phase = ctl.phase;
        if phase == Phase::Started {
            // SAFETY: the port is started and no queue handle is left (each
            // holds this Shared), so no burst runs on it.
            let ret = unsafe { sys::rte_eth_dev_stop(id) };
            if ret < 0 {
                tracing::warn!(port = id, error = %Error::ret("rte_eth_dev_stop", ret), "port stop failed");
            }
        }
        if phase != Phase::Opened {
            // SAFETY: the port is stopped and unused; closing releases its
            // queues, returning their mbufs to pools that outlive every port
            // handle ('m), and the EAL is still up (_eal drops after this).
            let ret = unsafe { sys::rte_eth_dev_close(id) };
            if ret < 0 {
                tracing::warn!(port = id, error = %Error::ret("rte_eth_dev_close", ret), "port close failed");
            }
        }
        drop(ctl);
        PORT_OPEN[usize::from(id)].store(false, Ordering::Release);
    }
}

/// An Ethernet port, the only handle on it in the process.
///
/// `'m` is how long the pools its queues use live: rx queues take
/// `&'m Mempool`, and transmitted mbufs must be [`Mbuf<'m>`](Mbuf), since the
/// device may hold them until it is closed.
///
/// Lifecycle: [`open`](Port::open), [`configure`](Port::configure), set up
/// every queue, [`start`](Port::start), hand out [`RxQueue`]s and
/// [`TxQueue`]s (one per queue, one thread each), and stop or drop. The
/// device is stopped and closed when the port and all its queue handles are
/// gone (if it was ever configured). The `&self` control calls (stats, link,
/// ...) may run on any thread while workers burst; they are serialised among
/// themselves.
///
/// A pool cannot go while a port that may hold its mbufs lives:
///
/// ```compile_fail
/// # use blipmq_dpdk_sys::{Eal, Mempool, Port, Result};
/// # fn f(eal: &Eal) -> Result<()> {
/// let mut port = Port::open(eal, 0)?;
/// {
///     let pool = Mempool::pktmbuf(eal, "rx", 1023, 32, Mempool::DEFAULT_DATA_ROOM, None)?;
///     port.setup_rx_queue(0, 512, &pool)?;
/// } // error: `pool` does not live long enough (the port closes later)
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Port<'m> {
    shared: Arc<Shared>,
    _pools: PhantomData<&'m Mempool>,
}

impl<'m> Port<'m> {
    /// Takes port `port_id`; fails if it does not exist or already has a
    /// `Port` in this process.
    pub fn open(eal: &Eal, port_id: u16) -> Result<Port<'m>> {
        let _ethdev = ethdev_lock();
        // SAFETY: the EAL is initialised (eal exists); the call checks any id.
        let valid = unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 1;
        if usize::from(port_id) >= MAX_PORTS || !valid {
            return Err(Error::InvalidArgument(format!("no port {port_id}")));
        }
        if PORT_OPEN[usize::from(port_id)].swap(true, Ordering::AcqRel) {
            return Err(Error::InvalidState(format!(
                "port {port_id} is already open"
            )));
        }
        Ok(Port {
            shared: Arc::new(Shared {
                id: port_id,
                state: Mutex::new(State {
                    phase: Phase::Opened,
                    rx: Vec::new(),
                    tx: Vec::new(),
                }),
                _eal: eal.clone(),
            }),
            _pools: PhantomData,
        })
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// What the port reports about itself.
    pub fn info(&self) -> Result<PortInfo> {
        let _state = self.shared.lock();
        port_info(self.id())
    }

    /// `rte_eth_dev_configure` with `rx_queues`/`tx_queues` queues. Masks
    /// `conf.rss_hf` with the device's RSS hash types and returns the
    /// configuration applied. The port must not be started; queues must be
    /// set up again afterwards.
    pub fn configure(
        &mut self,
        rx_queues: u16,
        tx_queues: u16,
        conf: &PortConf,
    ) -> Result<PortConf> {
        let id = self.id();
        let mut state = self.shared.lock();
        if state.phase == Phase::Started {
            return Err(Error::InvalidState(format!(
                "port {id} is started: stop it before configuring"
            )));
        }
        let info = port_info(id)?;
        let applied = PortConf {
            rss_hf: conf.rss_hf & info.flow_type_rss_offloads,
            ..conf.clone()
        };
        let mut c = sys::rte_eth_conf::default();
        c.rxmode.mq_mode = if applied.rss_hf != 0 {
            sys::RTE_ETH_MQ_RX_RSS
        } else {
            sys::RTE_ETH_MQ_RX_NONE
        };
        c.rxmode.mtu = applied.mtu.map_or(0, u32::from);
        c.rxmode.offloads = applied.rx_offloads;
        c.txmode.mq_mode = sys::RTE_ETH_MQ_TX_NONE;
        c.txmode.offloads = applied.tx_offloads;
        c.rx_adv_conf.rss_conf.rss_hf = applied.rss_hf;
        // SAFETY: c is a valid rte_eth_conf owned here.
        unsafe { sys::blipmq_eth_conf_set_intr_rxq(&mut c, i32::from(applied.rx_interrupts)) };
        // SAFETY: the port is valid and not started, no queue handle exists
        // (only a started port hands them out) and c is a valid, fully
        // initialised configuration (rss_key NULL: the default key).
        let ret = unsafe { sys::rte_eth_dev_configure(id, rx_queues, tx_queues, &c) };
        check(
            || format!("rte_eth_dev_configure(port {id}, {rx_queues} rx, {tx_queues} tx)"),
            ret,
        )?;
        state.phase = Phase::Configured;
        state.rx = vec![Slot::default(); usize::from(rx_queues)];
        state.tx = vec![Slot::default(); usize::from(tx_queues)];
        Ok(applied)
    }

    /// Sets up receive queue `queue` with `descriptors` descriptors (adjusted
    /// to the device's limits; the number used is returned), filled from
    /// `pool`.
    pub fn setup_rx_queue(
        &mut self,
        queue: u16,
        descriptors: u16,
        pool: &'m Mempool,
    ) -> Result<u16> {
        let id = self.id();
        let mut state = self.shared.lock();
        check_setup(id, &state, state.rx.len(), queue, "rx")?;
        let mut nb = descriptors;
        // SAFETY: the port is valid; nb is a valid in/out u16, and NULL tells
        // DPDK to leave the tx count alone.
        let ret =
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb, std::ptr::null_mut()) };
        check(
            || format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {id})"),
            ret,
        )?;
        // SAFETY: the port is configured with more than `queue` rx queues and
        // not started; NULL rx_conf means the device's defaults; the pool is
        // a live pktmbuf pool that outlives the port ('m), as the PMD keeps
        // and refills mbufs from it until the port is closed.
        let ret = unsafe {
            sys::rte_eth_rx_queue_setup(
                id,
                queue,
                nb,
                socket_of(id),
                std::ptr::null(),
                pool.as_ptr(),
            )
        };
        check(
            || format!("rte_eth_rx_queue_setup(port {id}, queue {queue})"),
            ret,
        )?;
        state.rx[usize::from(queue)].setup = true;
        Ok(nb)
    }

    /// Sets up transmit queue `queue` with `descriptors` descriptors
    /// (adjusted to the device's limits; the number used is returned).
    pub fn setup_tx_queue(&mut self, queue: u16, descriptors: u16) -> Result<u16> {
        let id = self.id();
        let mut state = self.shared.lock();
        check_setup(id, &state, state.tx.len(), queue, "tx")?;
        let mut nb = descriptors;
        // SAFETY: the port is valid; nb is a valid in/out u16, and NULL tells
        // DPDK to leave the rx count alone.
        let ret =
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, std::ptr::null_mut(), &mut nb) };
        check(
            || format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {id})"),
            ret,
        )?;
        // SAFETY: the port is configured with more than `queue` tx queues and
        // not started; NULL tx_conf means the device's defaults.
        let ret =
            unsafe { sys::rte_eth_tx_queue_setup(id, queue, nb, socket_of(id), std::ptr::null()) };
        check(
            || format!("rte_eth_tx_queue_setup(port {id}, queue {queue})"),
            ret,
        )?;
        state.tx[usize::from(queue)].setup = true;
        Ok(nb)
    }

    /// Starts the port; every configured queue must be set up.
    pub fn start(&mut self) -> Result<()> {
        let id = self.id();
        let mut state = self.shared.lock();
        match state.phase {
            Phase::Opened => {
                return Err(Error::InvalidState(format!("port {id} is not configured")))
            }
            Phase::Started => {
                return Err(Error::InvalidState(format!("port {id} is already started")))
            }
            Phase::Configured => {}
        }
        if let Some(q) = state.rx.iter().position(|s| !s.setup) {
            return Err(Error::InvalidState(format!(
                "port {id}: rx queue {q} is not set up"
            )));
        }
        if let Some(q) = state.tx.iter().position(|s| !s.setup) {
            return Err(Error::InvalidState(format!(
                "port {id}: tx queue {q} is not set up"
            )));
        }
        // SAFETY: the port is configured with every queue set up.
        let ret = unsafe { sys::rte_eth_dev_start(id) };
        check(|| format!("rte_eth_dev_start(port {id})"), ret)?;
        state.phase = Phase::Started;
        Ok(())
    }

    /// Stops the port; fails while any [`RxQueue`] or [`TxQueue`] is held.
    pub fn stop(&mut self) -> Result<()> {
        let id = self.id();
        let mut state = self.shared.lock();
        if state.phase != Phase::Started {
            return Err(Error::InvalidState(format!("port {id} is not started")));
        }
        if state.rx.iter().chain(&state.tx).any(|s| s.taken) {
            return Err(Error::InvalidState(format!(
                "port {id}: queues are still held"
            )));
        }
        // SAFETY: the port is started and no queue handle exists (checked
        // under the lock that hands them out), so no burst runs on it.
        let ret = unsafe { sys::rte_eth_dev_stop(id) };
        check(|| format!("rte_eth_dev_stop(port {id})"), ret)?;
        state.phase = Phase::Configured;
        Ok(())
    }

    /// Stops (if started) and closes the port now. Fails, leaving the closing
    /// to the last queue handle's drop, while queues are held.
    pub fn close(self) -> Result<()> {
        let id = self.id();
        let mut state = self.shared.lock();
        if state.rx.iter().chain(&state.tx).any(|s| s.taken) {
            return Err(Error::InvalidState(format!(
                "port {id}: queues are still held; it closes when they are dropped"
            )));
        }
        if state.phase == Phase::Started {
            // SAFETY: as in stop().
            let ret = unsafe { sys::rte_eth_dev_stop(id) };
            check(|| format!("rte_eth_dev_stop(port {id})"), ret)?;
        }
        // SAFETY: the port is stopped and no queue handle exists; closing
        // returns the queues' mbufs to pools that outlive the port ('m).
        let ret = unsafe { sys::rte_eth_dev_close(id) };
        // Whatever close said, the device is not to be touched again.
        state.phase = Phase::Opened;
        check(|| format!("rte_eth_dev_close(port {id})"), ret)?;
        Ok(())
    }

    /// Enables or disables promiscuous mode.
    pub fn promiscuous(&self, on: bool) -> Result<()> {
        let id = self.id();
        let _state = self.shared.lock();
        // SAFETY: the port is valid; control calls are serialised by the lock.
        let ret = unsafe {
            if on {
                sys::rte_eth_promiscuous_enable(id)
            } else {
                sys::rte_eth_promiscuous_disable(id)
            }
        };
        check(
            || {
                format!(
                    "rte_eth_promiscuous_{}(port {id})",
                    if on { "enable" } else { "disable" }
                )
            },
            ret,
        )?;
        Ok(())
    }

    /// The link state, without waiting for it to settle.
    pub fn link(&self) -> Result<Link> {
        let id = self.id();
        let _state = self.shared.lock();
        let (mut speed, mut up, mut fd, mut an) = (0u32, 0, 0, 0);
        // SAFETY: the port is valid; the four out pointers are valid locals.
        let ret =
            unsafe { sys::blipmq_eth_link_get_nowait(id, &mut speed, &mut up, &mut fd, &mut an) };
        check(|| format!("rte_eth_link_get_nowait(port {id})"), ret)?;
        Ok(Link {
            up: up != 0,
            speed_mbps: speed,
            full_duplex: fd != 0,
            autoneg: an != 0,
        })
    }

    /// The MAC address.
    pub fn mac_addr(&self) -> Result<[u8; 6]> {
        let id = self.id();
        let _state = self.shared.lock();
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: mac is a valid, writable rte_ether_addr; the port is valid.
        let ret = unsafe { sys::rte_eth_macaddr_get(id, &mut mac) };
        check(|| format!("rte_eth_macaddr_get(port {id})"), ret)?;
        Ok(mac.addr_bytes)
    }

    /// The basic counters.
    pub fn stats(&self) -> Result<PortStats> {
        let id = self.id();
        let _state = self.shared.lock();
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: s is a valid, writable rte_eth_stats; the port is valid.
        let ret = unsafe { sys::rte_eth_stats_get(id, &mut s) };
        check(|| format!("rte_eth_stats_get(port {id})"), ret)?;
        Ok(PortStats::from(&s))
    }

    /// Resets the basic counters (and, for most PMDs, the extended ones).
    pub fn reset_stats(&self) -> Result<()> {
        let id = self.id();
        let _state = self.shared.lock();
        // SAFETY: the port is valid; control calls are serialised by the lock.
        let ret = unsafe { sys::rte_eth_stats_reset(id) };
        check(|| format!("rte_eth_stats_reset(port {id})"), ret)?;
        Ok(())
    }

    /// The extended counters, by name, in the PMD's order.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let id = self.id();
        let _state = self.shared.lock();
        // The count can change between calls (a queue set up elsewhere);
        // retry a few times with the larger count.
        let mut n = 0usize;
        for _ in 0..4 {
            let mut names = vec![sys::rte_eth_xstat_name::default(); n];
            // SAFETY: names has room for n entries (NULL-safe when n is 0:
            // DPDK then only returns the count).
            let got =
                unsafe { sys::rte_eth_xstats_get_names(id, ptr_or_null(&mut names), n as u32) };
            let got = check(|| format!("rte_eth_xstats_get_names(port {id})"), got)? as usize;
            if got > n {
                n = got;
                continue;
            }
            let mut values = vec![sys::rte_eth_xstat::default(); n];
            // SAFETY: values has room for n entries.
            let got = unsafe { sys::rte_eth_xstats_get(id, ptr_or_null(&mut values), n as u32) };
            let got = check(|| format!("rte_eth_xstats_get(port {id})"), got)? as usize;
            if got > n {
                n = got;
                continue;
            }
            return Ok(values[..got]
                .iter()
                .filter_map(|x| {
                    let name = names.get(usize::try_from(x.id).ok()?)?;
                    // SAFETY: DPDK writes NUL-terminated names (snprintf) into
                    // the zeroed arrays.
                    let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                    Some((name.to_string_lossy().into_owned(), x.value))
                })
                .collect());
        }
        Err(Error::InvalidState(format!(
            "port {id}: the xstats count kept changing"
        )))
    }

    /// Takes receive queue `queue` of the started port for one thread. Fails
    /// if the port is not started, the queue does not exist or is taken.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue<'m>> {
        take(&self.shared, queue, Dir::Rx)?;
        Ok(RxQueue {
            shared: self.shared.clone(),
            port: self.id(),
            queue,
            _pools: PhantomData,
            _not_sync: PhantomData,
        })
    }

    /// Takes transmit queue `queue` of the started port for one thread. Fails
    /// if the port is not started, the queue does not exist or is taken.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue<'m>> {
        take(&self.shared, queue, Dir::Tx)?;
        Ok(TxQueue {
            shared: self.shared.clone(),
            port: self.id(),
            queue,
            _pools: PhantomData,
            _not_sync: PhantomData,
        })
    }

    /// The event fd of receive queue `queue`'s interrupt (to poll or epoll
    /// on); `None` when the port was not configured with
    /// [`PortConf::rx_interrupts`] or the PMD has no receive interrupts.
    pub fn rx_intr_fd(&self, queue: u16) -> Option<RawFd> {
        let _state = self.shared.lock();
        rx_intr_fd(self.id(), queue)
    }
}

impl Drop for Port<'_> {
    /// Nothing to do here (the device is closed by the last of the port and
    /// its queues, in `Shared`'s drop), but a `Drop` impl makes the borrow
    /// checker keep the pools (`'m`) alive until the port is dropped.
    fn drop(&mut self) {}
}

fn check_setup(id: u16, state: &State, queues: usize, queue: u16, dir: &str) -> Result<()> {
    match state.phase {
        Phase::Opened => Err(Error::InvalidState(format!("port {id} is not configured"))),
        Phase::Started => Err(Error::InvalidState(format!(
            "port {id} is started: stop it before setting up queues"
        ))),
        Phase::Configured if usize::from(queue) >= queues => Err(Error::InvalidArgument(format!(
            "port {id} has {queues} {dir} queues, not {}",
            u32::from(queue) + 1
        ))),
        Phase::Configured => Ok(()),
    }
}

/// The device's NUMA socket, or SOCKET_ID_ANY, as queue setup takes it.
fn socket_of(id: u16) -> u32 {
    // SAFETY: the port is valid; the call only reads its data.
    let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
    // SOCKET_ID_ANY (-1) is passed as DPDK itself passes it: cast to unsigned.
    socket as u32
}

fn ptr_or_null<T>(v: &mut [T]) -> *mut T {
    if v.is_empty() {
        std::ptr::null_mut()
    } else {
        v.as_mut_ptr()
    }
}

fn rx_intr_fd(port: u16, queue: u16) -> Option<RawFd> {
    // SAFETY: the port is valid; DPDK checks the queue id and returns a
    // negative value when the queue has no interrupt.
    let fd = unsafe { sys::rte_eth_dev_rx_intr_ctl_q_get_fd(port, queue) };
    (fd >= 0).then_some(fd)
}

#[derive(Clone, Copy, Debug)]
enum Dir {
    Rx,
    Tx,
}

fn take(shared: &Shared, queue: u16, dir: Dir) -> Result<()> {
    let id = shared.id;
    let mut state = shared.lock();
    if state.phase != Phase::Started {
        return Err(Error::InvalidState(format!("port {id} is not started")));
    }
    let (slots, name) = match dir {
        Dir::Rx => (&mut state.rx, "rx"),
        Dir::Tx => (&mut state.tx, "tx"),
    };
    let Some(slot) = slots.get_mut(usize::from(queue)) else {
        return Err(Error::InvalidArgument(format!(
            "port {id} has no {name} queue {queue}"
        )));
    };
    if slot.taken {
        return Err(Error::InvalidState(format!(
            "port {id} {name} queue {queue} is already taken"
        )));
    }
    slot.taken = true;
    Ok(())
}

fn give_back(shared: &Shared, queue: u16, dir: Dir) {
    let mut state = shared.lock();
    let slots = match dir {
        Dir::Rx => &mut state.rx,
        Dir::Tx => &mut state.tx,
    };
    if let Some(slot) = slots.get_mut(usize::from(queue)) {
        slot.taken = false;
    }
}

/// A receive queue of a started port, held by one thread (`Send`, not
/// `Sync`): while it exists the port cannot be stopped, and no other handle
/// on this queue can be taken.
///
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<blipmq_dpdk_sys::RxQueue<'static>>();
/// ```
#[derive(Debug)]
pub struct RxQueue<'m> {
    shared: Arc<Shared>,
    port: u16,
    queue: u16,
    _pools: PhantomData<&'m Mempool>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'m> RxQueue<'m> {
    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue id.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Receives up to the burst's free room (`rte_eth_rx_burst`), appending
    /// to it; returns how many arrived. Some PMDs' vector paths want room for
    /// at least 32 (or 4) at a time.
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut MbufBurst<'m, N>) -> usize {
        self.rx_burst_up_to(burst, N)
    }

    /// Like [`rx_burst`](Self::rx_burst), receiving at most `max` mbufs.
    pub fn rx_burst_up_to<const N: usize>(
        &mut self,
        burst: &mut MbufBurst<'m, N>,
        max: usize,
    ) -> usize {
        let free = burst.spare_capacity_ptr();
        let room = free.len().min(max).min(usize::from(u16::MAX)) as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: the port is started and stays so while this handle exists;
        // this queue is set up and used by this thread only (taken flag,
        // !Sync, &mut self); `free` has room for `room` pointers.
        let got =
            unsafe { sys::blipmq_eth_rx_burst(self.port, self.queue, free.as_mut_ptr(), room) };
        // SAFETY: DPDK wrote `got` received mbufs, now ours, after the burst's
        // held ones; they come from this queue's pool, which outlives 'm.
        unsafe { burst.set_len(burst.len() + usize::from(got)) };
        usize::from(got)
    }

    /// The event fd of this queue's receive interrupt; see
    /// [`Port::rx_intr_fd`].
    pub fn intr_fd(&self) -> Option<RawFd> {
        rx_intr_fd(self.port, self.queue)
    }

    /// Arms the receive interrupt (before sleeping on [`intr_fd`](Self::intr_fd)).
    /// Fails when the PMD has no receive interrupts or the port was not
    /// configured for them.
    pub fn intr_enable(&mut self) -> Result<()> {
        // SAFETY: the port is started and this queue is ours; DPDK checks the
        // port's interrupt support.
        let ret = unsafe { sys::rte_eth_dev_rx_intr_enable(self.port, self.queue) };
        check(
            || {
                format!(
                    "rte_eth_dev_rx_intr_enable(port {}, queue {})",
                    self.port, self.queue
                )
            },
            ret,
        )?;
        Ok(())
    }

    /// Disarms the receive interrupt (back to polling).
    pub fn intr_disable(&mut self) -> Result<()> {
        // SAFETY: as in intr_enable().
        let ret = unsafe { sys::rte_eth_dev_rx_intr_disable(self.port, self.queue) };
        check(
            || {
                format!(
                    "rte_eth_dev_rx_intr_disable(port {}, queue {})",
                    self.port, self.queue
                )
            },
            ret,
        )?;
        Ok(())
    }
}

impl Drop for RxQueue<'_> {
    fn drop(&mut self) {
        give_back(&self.shared, self.queue, Dir::Rx);
    }
}

/// A transmit queue of a started port, held by one thread (`Send`, not
/// `Sync`); see [`RxQueue`].
///
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<blipmq_dpdk_sys::TxQueue<'static>>();
/// ```
#[derive(Debug)]
pub struct TxQueue<'m> {
    shared: Arc<Shared>,
    port: u16,
    queue: u16,
    _pools: PhantomData<&'m Mempool>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'m> TxQueue<'m> {
    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue id.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Sends the burst's mbufs, from the first (`rte_eth_tx_burst`); returns
    /// how many the PMD took. Those it did not take stay in the burst, moved
    /// to its front: send them again, or [`clear`](MbufBurst::clear) (free)
    /// them and count a drop.
    pub fn tx_burst<const N: usize>(&mut self, burst: &mut MbufBurst<'m, N>) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let n = burst.len() as u16; // N <= u16::MAX (MbufBurst::new)
                                    // SAFETY: the port is started and stays so while this handle exists;
                                    // this queue is set up and used by this thread only; the burst's
                                    // first n pointers are owned mbufs whose pools outlive the port ('m),
                                    // and those the PMD takes become its own.
        let sent =
            unsafe { sys::blipmq_eth_tx_burst(self.port, self.queue, burst.as_mut_ptr(), n) };
        burst.consume_front(usize::from(sent));
        usize::from(sent)
    }

    /// Sends one mbuf; gives it back when the PMD does not take it.
    pub fn tx_one(&mut self, m: Mbuf<'m>) -> Result<(), Mbuf<'m>> {
        let mut p = m.into_raw().as_ptr();
        // SAFETY: as in tx_burst, for the one owned mbuf p.
        let sent = unsafe { sys::blipmq_eth_tx_burst(self.port, self.queue, &mut p, 1) };
        if sent == 1 {
            Ok(())
        } else {
            // SAFETY: the PMD did not take p, so it is still ours (non-null).
            Err(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
        }
    }

    /// `rte_eth_tx_prepare`: readies the burst's offload requests for the
    /// device (e.g. pseudo-header checksums, written into the packets) and
    /// returns how many from the first are ready. The next one, if any, must
    /// not be sent as is: either its buffer is shared (not
    /// [`writable`](Mbuf::is_writable)), or the PMD rejected it (see
    /// [`errno`](crate::error::errno) for why).
    pub fn tx_prepare<const N: usize>(&mut self, burst: &mut MbufBurst<'m, N>) -> usize {
        let writable = burst
            .as_slice()
            .iter()
            .position(|m| !m.is_writable())
            .unwrap_or(burst.len());
        if writable == 0 {
            return 0;
        }
        let n = writable as u16; // N <= u16::MAX (MbufBurst::new)
                                 // SAFETY: the queue is ours and set up; the first n pointers are
                                 // owned mbufs with unshared buffers, which the call edits in place.
        usize::from(unsafe {
            sys::blipmq_eth_tx_prepare(self.port, self.queue, burst.as_mut_ptr(), n)
        })
    }
}

impl Drop for TxQueue<'_> {
    fn drop(&mut self) {
        give_back(&self.shared, self.queue, Dir::Tx);
    }
}
