//! Software verification of received IPv4 frames.
//!
//! smoltcp is told not to verify checksums (its capabilities say `Tx`): the
//! device decides per frame, because only the kernel knows whether a frame's
//! checksum was already checked (`TP_STATUS_CSUM_VALID`) or is a partial
//! checksum from a local sender with checksum offload
//! (`TP_STATUS_CSUMNOTREADY`, e.g. a veth peer), which is not a corruption.
//! Every other frame is verified here: the IPv4 header always, and TCP, UDP
//! and ICMP over the whole segment.

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETH_HEADER: usize = 14;

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// A checksum does not match, or the headers are malformed.
    Corrupt,
    /// Neither IPv4 nor ARP: nothing the stack handles.
    Ignore,
}

/// One's-complement sum of `data` added to `sum` (not folded).
fn sum_bytes(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Checks an Ethernet frame. `l4_trusted`: the kernel vouches for (or
/// owes) the transport checksum, so only the IPv4 header is checked.
pub fn verify(frame: &[u8], l4_trusted: bool) -> Verdict {
    if frame.len() < ETH_HEADER {
        return Verdict::Corrupt;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => return Verdict::Accept,
        ETHERTYPE_IPV4 => {}
        _ => return Verdict::Ignore,
    }
    let ip = &frame[ETH_HEADER..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Verdict::Corrupt;
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return Verdict::Corrupt;
    }
    if fold(sum_bytes(0, &ip[..header_len])) != 0xffff {
        return Verdict::Corrupt;
    }
    if l4_trusted {
        return Verdict::Accept;
    }
    // Fragments are verified by the stack after reassembly (smoltcp is
    // built without it, so they are dropped there).
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if fragmented {
        return Verdict::Accept;
    }
    let protocol = ip[9];
    let segment = &ip[header_len..total_len];
    match protocol {
        // ICMP: no pseudo-header.
        1 => {
            if fold(sum_bytes(0, segment)) == 0xffff {
                Verdict::Accept
            } else {
                Verdict::Corrupt
            }
        }
        // TCP and UDP: pseudo-header, then the segment.
        6 | 17 => {
            if protocol == 17 && segment.len() >= 8 && segment[6] == 0 && segment[7] == 0 {
                // UDP without a checksum.
                return Verdict::Accept;
            }
            let mut sum = sum_bytes(0, &ip[12..20]);
            sum += u32::from(protocol);
            sum += segment.len() as u32;
            if fold(sum_bytes(sum, segment)) == 0xffff {
                Verdict::Accept
            } else {
                Verdict::Corrupt
            }
        }
        _ => Verdict::Accept,
    }
}

/// What a device with checksum offload must do for a frame it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Nothing to offload (ARP, or not IPv4).
    None,
    /// The IPv4 header checksum (an ICMP or UDP frame: its own checksum was
    /// computed in software).
    Ipv4 { l3_len: u16 },
    /// The IPv4 header and TCP checksums.
    Ipv4Tcp { l3_len: u16 },
}

/// Prepares a frame for transmit checksum offload, as NICs expect it: the
/// IPv4 header checksum zeroed, and the TCP checksum field holding the
/// pseudo-header sum (not inverted), to which the NIC adds the segment.
/// smoltcp wrote neither (its capabilities said the device computes them);
/// ICMP and UDP checksums are left as smoltcp computed them.
pub fn prepare_offload(frame: &mut [u8]) -> Offload {
    let Some(header_len) = ipv4_header_len(frame) else {
        return Offload::None;
    };
    frame[ETH_HEADER + 10] = 0;
    frame[ETH_HEADER + 11] = 0;
    let l3_len = header_len as u16;
    match write_tcp_pseudo_header_sum(frame) {
        Some(_) => Offload::Ipv4Tcp { l3_len },
        None => Offload::Ipv4 { l3_len },
    }
}

/// The IPv4 header length of an Ethernet frame whose IPv4 header and total
/// length are sound; None for anything else.
fn ipv4_header_len(frame: &[u8]) -> Option<usize> {
    if frame.len() < ETH_HEADER + 20 || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4
    {
        return None;
    }
    let ip = &frame[ETH_HEADER..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    (header_len >= 20 && total_len >= header_len && total_len <= ip.len()).then_some(header_len)
}

/// For an IPv4 TCP frame: writes the pseudo-header sum (not inverted) into
/// the TCP checksum field, the partial checksum a device completes over
/// the segment, and returns the IP and TCP header lengths. None (frame
/// untouched) for anything else.
pub fn write_tcp_pseudo_header_sum(frame: &mut [u8]) -> Option<(usize, usize)> {
    let header_len = ipv4_header_len(frame)?;
    let ip = &mut frame[ETH_HEADER..];
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != 6 || total_len < header_len + 20 {
        return None;
    }
    let tcp_len = usize::from(ip[header_len + 12] >> 4) * 4;
    if tcp_len < 20 || header_len + tcp_len > total_len {
        return None;
    }
    let mut sum = sum_bytes(0, &ip[12..20]);
    sum += 6;
    sum += (total_len - header_len) as u32;
    let pseudo = fold(sum).to_be_bytes();
    ip[header_len + 16] = pseudo[0];
    ip[header_len + 17] = pseudo[1];
    Some((header_len, tcp_len))
}

/// Writes full IPv4 header and TCP checksums into an IPv4 TCP frame (what a
/// device that cuts segments does for each piece). False, frame untouched,
/// for anything else.
pub fn write_ipv4_tcp_checksums(frame: &mut [u8]) -> bool {
    let Some((ip_len, _)) = write_tcp_pseudo_header_sum(frame) else {
        return false;
    };
    let ip = &mut frame[ETH_HEADER..];
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    ip[10] = 0;
    ip[11] = 0;
    let ip_sum = !fold(sum_bytes(0, &ip[..ip_len]));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // The field holds the pseudo-header sum: add the segment to it.
    let pseudo = u16::from_be_bytes([ip[ip_len + 16], ip[ip_len + 17]]);
    ip[ip_len + 16] = 0;
    ip[ip_len + 17] = 0;
    let tcp_sum = !fold(sum_bytes(u32::from(pseudo), &ip[ip_len..total_len]));
    ip[ip_len + 16..ip_len + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with correct checksums.
    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        let total = (40 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        let ip_sum = !fold(sum_bytes(0, &f[14..34]));
        f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&9999u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x18;
        f.extend_from_slice(payload);
        let mut sum = sum_bytes(0, &f[26..34]) + 6 + (20 + payload.len()) as u32;
        sum = sum_bytes(sum, &f[34..]);
        let tcp_sum = !fold(sum);
        f[50..52].copy_from_slice(&tcp_sum.to_be_bytes());
        f
    }

    #[test]
    fn written_checksums_verify() {
        let mut frame = tcp_frame(b"some payload, odd length");
        frame[24] ^= 0xff;
        frame[50] ^= 0xff;
        assert_eq!(verify(&frame, false), Verdict::Corrupt);
        assert!(write_ipv4_tcp_checksums(&mut frame));
        assert_eq!(frame, tcp_frame(b"some payload, odd length"));
    }

    #[test]
    fn good_frames_pass() {
        assert_eq!(verify(&tcp_frame(b"hello"), false), Verdict::Accept);
        assert_eq!(verify(&tcp_frame(b"odd"), false), Verdict::Accept);
        assert_eq!(verify(&tcp_frame(b""), false), Verdict::Accept);
    }

    #[test]
    fn corrupt_payload_is_caught_unless_trusted() {
        let mut f = tcp_frame(b"hello world");
        let last = f.len() - 1;
        f[last] ^= 0x40;
        assert_eq!(verify(&f, false), Verdict::Corrupt);
        // A partial checksum (offload) is not verified, but the IP header is.
        assert_eq!(verify(&f, true), Verdict::Accept);
        f[22] ^= 1;
        assert_eq!(verify(&f, true), Verdict::Corrupt);
    }

    /// What a NIC does with a frame [`prepare_offload`] prepared.
    fn offload_like_a_nic(frame: &mut [u8]) {
        let ip_sum = !fold(sum_bytes(0, &frame[14..34]));
        frame[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_sum = !fold(sum_bytes(0, &frame[34..]));
        frame[50..52].copy_from_slice(&tcp_sum.to_be_bytes());
    }

    #[test]
    fn offload_preparation_gives_what_software_computes() {
        for payload in [&b""[..], b"odd", b"hello world"] {
            let good = tcp_frame(payload);
            let mut offloaded = good.clone();
            // smoltcp leaves garbage (here: zeros) where it computes nothing.
            offloaded[24..26].fill(0);
            offloaded[50..52].fill(0);
            assert_eq!(
                prepare_offload(&mut offloaded),
                Offload::Ipv4Tcp { l3_len: 20 }
            );
            offload_like_a_nic(&mut offloaded);
            assert_eq!(offloaded, good);
        }
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(prepare_offload(&mut arp), Offload::None);
        let mut icmp = tcp_frame(b"ping");
        icmp[23] = 1;
        assert_eq!(prepare_offload(&mut icmp), Offload::Ipv4 { l3_len: 20 });
    }

    #[test]
    fn malformed_and_foreign_frames() {
        assert_eq!(verify(&[0; 10], false), Verdict::Corrupt);
        let mut f = tcp_frame(b"x");
        f[16] = 0xff;
        assert_eq!(verify(&f, false), Verdict::Corrupt);
        let mut v6 = tcp_frame(b"x");
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(verify(&v6, false), Verdict::Ignore);
        // Ethernet padding after the IP packet is fine.
        let mut padded = tcp_frame(b"x");
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(verify(&padded, false), Verdict::Accept);
    }
}
