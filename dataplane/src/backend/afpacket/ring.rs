//! A packet socket with a TPACKET_V3 rx ring and tx ring in one mapping.
//!
//! The rx ring is a sequence of blocks. The kernel fills a block with
//! variable-length frames and hands it over (`TP_STATUS_USER` in the block
//! header) when it is full or `block_timeout_ms` after its first frame; user
//! space reads the frames in place and gives the block back
//! (`TP_STATUS_KERNEL`). The tx ring is a sequence of fixed-size frame slots:
//! user space writes a frame into a free slot (`TP_STATUS_AVAILABLE`), marks
//! it `TP_STATUS_SEND_REQUEST`, and one `sendto` sends every marked slot.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ring geometry; both rings get the same.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    pub block_size: usize,
    pub block_count: usize,
    pub frame_size: usize,
    pub block_timeout_ms: u32,
}

// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then the
// `tpacket_hdr_v1`).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;

/// Where a tx frame's data starts in its slot: `TPACKET3_HDRLEN -
/// sizeof(struct sockaddr_ll)`, the kernel's default without
/// `PACKET_TX_HAS_OFF`.
pub const TX_DATA_OFFSET: usize = libc::TPACKET3_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();

/// The interface facts the device needs.
#[derive(Debug, Clone, Copy)]
pub struct LinkInfo {
    pub ifindex: i32,
    pub mtu: usize,
    pub mac: [u8; 6],
    pub up: bool,
}

/// A received frame, valid until the next [`RxRing::next_frame`] call.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame {
    pub data: *const u8,
    /// Bytes present in the ring.
    pub snaplen: usize,
    /// Bytes of the frame on the wire (more than `snaplen` if truncated).
    pub len: usize,
    pub status: u32,
}

/// The reading side of the rx ring.
pub struct RxRing {
    base: *mut u8,
    block_size: usize,
    block_count: usize,
    /// The block being read.
    current: usize,
    /// Whether `current` was handed to us and is being read.
    in_block: bool,
    /// Frames of `current` not yet returned.
    remaining: u32,
    /// Offset in `current` of the next frame.
    next: usize,
}

impl RxRing {
    fn block(&self, index: usize) -> *mut u8 {
        // SAFETY: `index < block_count`, so the offset stays inside the rx
        // part of the mapping.
        unsafe { self.base.add(index * self.block_size) }
    }

    fn block_status(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the block header is inside the mapping, 8-aligned (blocks
        // are page-aligned), and the kernel and we access the status word
        // only as an aligned u32; the mapping lives as long as `self`.
        unsafe { &*(self.block(index).add(BLOCK_STATUS) as *const AtomicU32) }
    }

    /// Whether a frame is ready without blocking.
    pub fn has_frames(&self) -> bool {
        (self.in_block && self.remaining > 0)
            || self.block_status(self.current).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next received frame. The block of the previous frame is given
    /// back to the kernel once all its frames were returned, so a frame
    /// stays valid until the next call.
    pub fn next_frame(&mut self) -> Option<RxFrame> {
        loop {
            if !self.in_block {
                let status = self.block_status(self.current).load(Ordering::Acquire);
                if status & libc::TP_STATUS_USER == 0 {
                    return None;
                }
                let block = self.block(self.current);
                // SAFETY: the block is ours (TP_STATUS_USER, read with
                // Acquire after the kernel's release); its header fields are
                // aligned u32s inside the mapping.
                unsafe {
                    self.remaining = ptr::read(block.add(BLOCK_NUM_PKTS) as *const u32);
                    self.next = ptr::read(block.add(BLOCK_FIRST_PKT) as *const u32) as usize;
                }
                self.in_block = true;
            }
            if self.remaining == 0 || self.next + libc::TPACKET3_HDRLEN > self.block_size {
                self.block_status(self.current)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                self.current = (self.current + 1) % self.block_count;
                self.in_block = false;
                continue;
            }
            let block = self.block(self.current);
            // SAFETY: `next` was checked to leave room for a frame header in
            // the block, which we own; the kernel 16-aligns frame headers.
            let header = unsafe { ptr::read(block.add(self.next) as *const libc::tpacket3_hdr) };
            let mac = self.next + usize::from(header.tp_mac);
            let snaplen = header.tp_snaplen as usize;
            self.remaining -= 1;
            self.next = if header.tp_next_offset == 0 {
                self.block_size
            } else {
                self.next + header.tp_next_offset as usize
            };
            if mac + snaplen > self.block_size {
                continue;
            }
            return Some(RxFrame {
                // SAFETY: `mac + snaplen <= block_size`: inside the block.
                data: unsafe { block.add(mac) },
                snaplen,
                len: header.tp_len as usize,
                status: header.tp_status,
            });
        }
    }
}

/// The writing side of the tx ring.
pub struct TxRing {
    base: *mut u8,
    frame_size: usize,
    frame_count: usize,
    head: usize,
    /// Slots marked for sending since the last kick.
    pub pending: usize,
    /// Frames the kernel rejected (`TP_STATUS_WRONG_FORMAT`).
    pub rejected: u64,
}

impl TxRing {
    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: `slot < frame_count`; `tp_status` is the aligned u32 at
        // offset 20 of the slot's `tpacket3_hdr` inside the mapping, which
        // lives as long as `self`.
        unsafe {
            &*(self
                .base
                .add(slot * self.frame_size + std::mem::offset_of!(libc::tpacket3_hdr, tp_status))
                as *const AtomicU32)
        }
    }

    /// Largest frame a slot holds.
    pub fn max_frame(&self) -> usize {
        self.frame_size - TX_DATA_OFFSET
    }

    /// Whether the next slot is free.
    pub fn has_room(&mut self) -> bool {
        let status = self.status(self.head).load(Ordering::Acquire);
        if status == libc::TP_STATUS_AVAILABLE {
            return true;
        }
        if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.rejected += 1;
            self.status(self.head)
                .store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
            return true;
        }
        false
    }

    /// Fills the next slot (which must be free: [`has_room`](Self::has_room))
    /// with `len` bytes written by `f` and marks it for sending.
    /// `keep` sees the written frame and may withdraw it (the slot stays free).
    pub fn fill<R>(
        &mut self,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
        keep: impl FnOnce(&[u8]) -> bool,
    ) -> R {
        assert!(len <= self.max_frame(), "frame larger than a tx slot");
        // SAFETY: the slot is inside the tx part of the mapping and is ours:
        // its status is TP_STATUS_AVAILABLE (checked by `has_room`), so the
        // kernel does not read it until we mark it below.
        let slot = unsafe { self.base.add(self.head * self.frame_size) };
        // SAFETY: `TX_DATA_OFFSET + len <= frame_size`: inside the slot.
        let data = unsafe { std::slice::from_raw_parts_mut(slot.add(TX_DATA_OFFSET), len) };
        let result = f(data);
        if !keep(data) {
            return result;
        }
        // SAFETY: the slot header is ours (see above) and 16-aligned.
        unsafe {
            let header = slot as *mut libc::tpacket3_hdr;
            (*header).tp_next_offset = 0;
            (*header).tp_len = len as u32;
            (*header).tp_snaplen = len as u32;
        }
        self.status(self.head)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (self.head + 1) % self.frame_count;
        self.pending += 1;
        result
    }
}

/// The socket and its mapping; unmapped and closed on drop.
pub struct PacketSocket {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    pub link: LinkInfo,
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are the mapping made in `open`; the rings
        // that point into it are owned by the same device and dropped with it.
        unsafe {
            libc::munmap(self.map as *mut libc::c_void, self.map_len);
        }
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        let error = io::Error::last_os_error();
        Err(io::Error::new(error.kind(), format!("{what}: {error}")))
    } else {
        Ok(rc)
    }
}

fn set_option<T>(fd: RawFd, name: libc::c_int, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc, what).map(drop)
}

/// An `ifreq` for `name` (checked to fit by the caller).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

/// Index, MTU, MAC and up flag of an interface.
pub fn link_info(fd: RawFd, name: &str) -> io::Result<LinkInfo> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `cname` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("interface {name}: {error}"),
        ));
    }
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFMTU fills `ifr_mtu` of the ifreq we pass.
    check(
        unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) },
        "SIOCGIFMTU",
    )?;
    // SAFETY: the kernel just wrote the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu }.max(68) as usize;
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFHWADDR fills `ifr_hwaddr`.
    check(
        unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) },
        "SIOCGIFHWADDR",
    )?;
    let mut mac = [0u8; 6];
    // SAFETY: the kernel just wrote the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = *src as u8;
    }
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills `ifr_flags`.
    check(
        unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) },
        "SIOCGIFFLAGS",
    )?;
    // SAFETY: the kernel just wrote the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(LinkInfo {
        ifindex: ifindex as i32,
        mtu,
        mac,
        up: flags as libc::c_int & libc::IFF_UP != 0,
    })
}

/// Opens a packet socket on `interface` with both rings mapped. With
/// `fanout = Some(group)` the socket receives IPv4 only and joins the
/// PACKET_FANOUT_HASH group `group`: the kernel spreads flows over the
/// group's sockets by their flow hash (IP fragments reassembled first).
pub fn open(
    interface: &str,
    config: RingConfig,
    fanout: Option<u16>,
) -> io::Result<(PacketSocket, RxRing, TxRing)> {
    // Protocol 0: no frame is queued before the rings exist; bind() below
    // starts reception.
    // SAFETY: plain socket(2) call.
    let raw = check(
        unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        },
        "socket(AF_PACKET)",
    )?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let link = link_info(raw, interface)?;
    set_option(
        raw,
        libc::PACKET_VERSION,
        &(libc::tpacket_versions::TPACKET_V3 as libc::c_int),
        "PACKET_VERSION",
    )?;
    // A malformed tx frame is skipped instead of stopping the ring (must be
    // set before the rings exist).
    set_option(raw, libc::PACKET_LOSS, &1 as &libc::c_int, "PACKET_LOSS")?;
    let frames_per_block = config.block_size / config.frame_size;
    let mut req = libc::tpacket_req3 {
        tp_block_size: config.block_size as u32,
        tp_block_nr: config.block_count as u32,
        tp_frame_size: config.frame_size as u32,
        tp_frame_nr: (frames_per_block * config.block_count) as u32,
        tp_retire_blk_tov: config.block_timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    set_option(raw, libc::PACKET_RX_RING, &req, "PACKET_RX_RING")?;
    req.tp_retire_blk_tov = 0;
    set_option(raw, libc::PACKET_TX_RING, &req, "PACKET_TX_RING")?;
    // Our own transmissions (and the kernel's) are not received back.
    set_option(
        raw,
        libc::PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
        "PACKET_IGNORE_OUTGOING",
    )?;
    // Straight to the driver: no qdisc on the transmit path.
    set_option(
        raw,
        libc::PACKET_QDISC_BYPASS,
        &1 as &libc::c_int,
        "PACKET_QDISC_BYPASS",
    )?;

    let ring_len = config.block_size * config.block_count;
    let map_len = 2 * ring_len;
    // SAFETY: maps the socket's rings (rx then tx) as the kernel documents;
    // the result is checked below.
    let map = unsafe {
        libc::mmap(
            ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            raw,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("mmap of the packet rings: {error}"),
        ));
    }
    let map = map as *mut u8;
    let socket = PacketSocket {
        fd,
        map,
        map_len,
        link,
    };

    // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    let protocol = if fanout.is_some() {
        libc::ETH_P_IP
    } else {
        libc::ETH_P_ALL
    };
    addr.sll_protocol = (protocol as u16).to_be();
    addr.sll_ifindex = link.ifindex;
    // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
    check(
        unsafe {
            libc::bind(
                raw,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        },
        "bind(AF_PACKET)",
    )?;
    if let Some(group) = fanout {
        let mode = (libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) as libc::c_int;
        let arg: libc::c_int = libc::c_int::from(group) | (mode << 16);
        set_option(raw, libc::PACKET_FANOUT, &arg, "PACKET_FANOUT")?;
    }

    let rx = RxRing {
        base: map,
        block_size: config.block_size,
        block_count: config.block_count,
        current: 0,
        in_block: false,
        remaining: 0,
        next: 0,
    };
    let tx = TxRing {
        // SAFETY: the tx ring follows the rx ring in the mapping.
        base: unsafe { map.add(ring_len) },
        frame_size: config.frame_size,
        frame_count: frames_per_block * config.block_count,
        head: 0,
        pending: 0,
        rejected: 0,
    };
    Ok((socket, rx, tx))
}

impl PacketSocket {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Frames the kernel dropped for a full rx ring since the last call
    /// (reading `PACKET_STATISTICS` resets the kernel's counters).
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut stats = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: `stats` is a valid tpacket_stats_v3 (what a TPACKET_V3
        // socket writes) and `len` its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut stats).cast(),
                &mut len,
            )
        };
        check(rc, "PACKET_STATISTICS")?;
        Ok(u64::from(stats.tp_drops))
    }

    /// Asks the kernel to send every slot marked for sending. Returns false
    /// when it could not take them now (retry later).
    pub fn kick(&self) -> io::Result<bool> {
        loop {
            // SAFETY: sendto with no buffer and no address on a packet socket
            // with a tx ring sends the ring's marked slots.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                return Ok(true);
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(false),
                _ => return Err(error),
            }
        }
    }
}

/// A plain (ring-less) packet socket that receives every ARP frame of the
/// interface. With PACKET_FANOUT each worker sees only its share of the
/// frames, but every worker's stack must learn every neighbour: each one
/// reads all ARP frames here. ARP is rare, so copying it is fine.
pub struct ArpSocket {
    fd: OwnedFd,
}

impl ArpSocket {
    pub fn open(ifindex: i32) -> io::Result<ArpSocket> {
        // SAFETY: plain socket(2) call.
        let raw = check(
            unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from((libc::ETH_P_ARP as u16).to_be()),
                )
            },
            "socket(AF_PACKET, ETH_P_ARP)",
        )?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_option(
            raw,
            libc::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
            "PACKET_IGNORE_OUTGOING",
        )?;
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        check(
            unsafe {
                libc::bind(
                    raw,
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            },
            "bind(AF_PACKET, ETH_P_ARP)",
        )?;
        Ok(ArpSocket { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One ARP frame into `buf`, if any is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (n > 0).then_some(n as usize)
    }
}
