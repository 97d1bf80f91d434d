//! The link itself, frame by frame: what each fault does, that a seed
//! replays, that buffers are recycled.

use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;

use super::*;

const T0: Instant = Instant::ZERO;

/// An IPv4-looking frame (the link only looks at the EtherType) whose
/// payload starts with `n`.
fn frame(n: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = n;
    f
}

fn send(dev: &mut MemoryDevice, frames: &[Vec<u8>]) {
    for f in frames {
        let token = dev.transmit(T0).expect("a tx token");
        token.consume(f.len(), |buf| buf.copy_from_slice(f));
    }
    dev.flush_tx();
}

fn recv_all(dev: &mut MemoryDevice) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let Some((rx, _tx)) = dev.receive(T0) else {
            return got;
        };
        got.push(rx.consume(|f| f.to_vec()));
    }
    panic!("the link never ran dry");
}

/// The first payload byte of each frame: which frame it was.
fn ids(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.iter().map(|f| f[14]).collect()
}

/// A link (seed 1) with these faults both ways.
fn link(faults: Faults) -> (MemoryDevice, MemoryDevice) {
    MemoryDevice::pair(MemoryConfig::new(1).with_faults(faults))
}

/// Sends `frames` from `a` to `b` of a new link with these faults: what
/// arrived, and what the link did.
fn through(faults: Faults, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, FaultStats) {
    let (mut a, mut b) = link(faults);
    send(&mut a, frames);
    (recv_all(&mut b), a.fault_stats().0)
}

fn numbered(count: u8) -> Vec<Vec<u8>> {
    (0..count).map(frame).collect()
}

#[test]
fn frames_cross_in_order_after_the_flush_both_ways() {
    let (mut a, mut b) = MemoryDevice::pair(MemoryConfig::new(1));
    let token = a.transmit(T0).unwrap();
    token.consume(60, |buf| buf.copy_from_slice(&frame(7)));
    assert!(a.tx_pending());
    assert!(!b.rx_ready(), "a frame crossed before the flush");
    assert!(b.receive(T0).is_none());
    a.flush_tx();
    assert!(!a.tx_pending());
    assert!(b.rx_ready());
    send(&mut a, &numbered(3));
    assert_eq!(ids(&recv_all(&mut b)), vec![7, 0, 1, 2]);
    send(&mut b, &numbered(2));
    assert!(!b.rx_ready(), "b's own frame came back to it");
    assert_eq!(ids(&recv_all(&mut a)), vec![0, 1]);
    assert_eq!(a.stats().tx_frames, 4);
    assert_eq!(a.stats().tx_kicks, 2);
    assert_eq!(a.stats().rx_frames, 2);
    assert_eq!(b.stats().rx_bytes, 4 * 60);
    let (out, incoming) = a.fault_stats();
    assert_eq!((out.sent, out.delivered, incoming.delivered), (4, 4, 2));
}

#[test]
fn the_device_is_an_ethernet_nic_whose_checksums_smoltcp_verifies() {
    let (a, _b) = MemoryDevice::pair(MemoryConfig::new(1));
    let caps = a.capabilities();
    assert_eq!(caps.medium, Medium::Ethernet);
    assert_eq!(caps.max_transmission_unit, 1514);
    assert_eq!(caps.ip_mtu(), 1500);
    let sum = &caps.checksum;
    assert!(sum.ipv4.rx() && sum.tcp.rx() && sum.icmpv4.rx());
    assert!(sum.ipv4.tx() && sum.tcp.tx());
    let mut fds = Vec::new();
    a.wait_fds(&mut fds);
    assert!(fds.is_empty());
    assert_eq!(a.mac(), [2, 0, 0, 0, 0, 0x0a]);

    fn movable<T: Send + 'static>(_: &T) {}
    movable(&a);
}

#[test]
fn loss_drops_and_counts() {
    let all = Faults {
        loss: 1.0,
        ..Faults::NONE
    };
    let (got, stats) = through(all, &numbered(5));
    assert!(got.is_empty());
    assert_eq!(stats.lost, 5);

    let (mut a, mut b) = link(Faults {
        loss: 0.25,
        ..Faults::NONE
    });
    for _ in 0..40 {
        send(&mut a, &numbered(100));
    }
    let got = recv_all(&mut b).len();
    assert!((2700..3300).contains(&got), "{got} of 4000 passed 25% loss");
    assert_eq!(a.fault_stats().0.lost, 4000 - got as u64);
}

#[test]
fn duplication_sends_a_copy_behind_the_frame() {
    let always = Faults {
        duplicate: 1.0,
        ..Faults::NONE
    };
    let (got, stats) = through(always, &numbered(3));
    assert_eq!(ids(&got), vec![0, 0, 1, 1, 2, 2]);
    assert_eq!((stats.duplicated, stats.delivered), (3, 6));
}

#[test]
fn a_reordered_frame_waits_behind_the_next_n() {
    let (mut a, mut b) = MemoryDevice::pair(MemoryConfig::new(1));
    let hold = Faults {
        reorder: 1.0,
        reorder_depth: 2,
        ..Faults::NONE
    };
    a.set_faults(hold, Faults::NONE);
    send(&mut a, &[frame(0)]);
    a.set_faults(Faults::NONE, Faults::NONE);
    send(&mut a, &[frame(1), frame(2), frame(3)]);
    assert_eq!(ids(&recv_all(&mut b)), vec![1, 2, 0, 3]);
    assert_eq!(a.fault_stats().0.reordered, 1);

    // With nothing behind it, a held frame is not lost: it goes when the
    // receiver finds nothing else.
    a.set_faults(hold, Faults::NONE);
    send(&mut a, &[frame(4), frame(5)]);
    assert!(b.rx_ready());
    assert_eq!(ids(&recv_all(&mut b)), vec![4, 5]);
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn corruption_changes_one_byte_of_the_ip_packet_and_spares_arp() {
    let always = Faults {
        corrupt: 1.0,
        ..Faults::NONE
    };
    let sent: Vec<Vec<u8>> = (0..50).map(|_| frame(0)).collect();
    let (got, stats) = through(always, &sent);
    assert_eq!(got.len(), 50);
    for (got, sent) in got.iter().zip(&sent) {
        let changed: Vec<usize> = (0..got.len()).filter(|&i| got[i] != sent[i]).collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert!(changed[0] >= 14, "the Ethernet header was corrupted");
    }
    assert_eq!(stats.corrupted, 50);

    let mut arp = frame(0);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let (got, stats) = through(always, std::slice::from_ref(&arp));
    assert_eq!((got, stats.corrupted), (vec![arp], 0));
}

#[test]
fn a_full_queue_drops_what_comes_next() {
    let (mut a, mut b) = link(Faults {
        queue_limit: 4,
        ..Faults::NONE
    });
    send(&mut a, &numbered(10));
    assert_eq!(ids(&recv_all(&mut b)), vec![0, 1, 2, 3]);
    assert_eq!(a.fault_stats().0.queue_full, 6);
    assert_eq!(a.stats().tx_dropped, 6);
    // Room again once the receiver took them.
    send(&mut a, &numbered(2));
    assert_eq!(ids(&recv_all(&mut b)), vec![0, 1]);
}

/// Everything at once, twice with one seed and once with another.
#[test]
fn a_seed_replays_the_same_faults() {
    let faults = Faults {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        reorder_depth: 3,
        corrupt: 0.1,
        queue_limit: 0,
    };
    let run = |seed| {
        let (mut a, mut b) = MemoryDevice::pair(MemoryConfig::new(seed).with_faults(faults));
        let mut got = Vec::new();
        for round in 0..20u8 {
            let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(round * 10 + i)).collect();
            send(&mut a, &frames);
            got.extend(recv_all(&mut b));
        }
        (got, a.fault_stats().0)
    };
    let (first, stats) = run(42);
    assert_eq!(run(42), (first.clone(), stats));
    assert_ne!(run(43).0, first);
    assert!(stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0 && stats.corrupted > 0);
    assert_eq!(stats.delivered, 200 - stats.lost + stats.duplicated);
}

#[test]
fn frame_buffers_are_recycled() {
    let faults = Faults {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.2,
        ..Faults::NONE
    };
    let (mut a, mut b) = MemoryDevice::pair(MemoryConfig::new(5).with_faults(faults));
    let exchange = |a: &mut MemoryDevice, b: &mut MemoryDevice| {
        send(a, &numbered(32));
        recv_all(b);
        send(b, &numbered(32));
        recv_all(a);
    };
    for _ in 0..100 {
        exchange(&mut a, &mut b);
    }
    // 6,400 frames and their copies went through; never more than 64 were
    // on the link at once (32, each copied at most once).
    let allocated = a.buffers_allocated();
    assert!(
        (1..=64).contains(&allocated),
        "{allocated} buffers allocated: frames are not recycled"
    );
}
