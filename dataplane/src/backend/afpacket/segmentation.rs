//! TCP segmentation offload on a packet socket: a frame larger than the
//! link's MTU goes out with a `virtio_net_hdr` in front (the socket has
//! `PACKET_VNET_HDR`), which asks the kernel to cut it into MTU-sized
//! segments (GSO, or the NIC's TSO) and to complete their checksums. One
//! such frame replaces up to ~40 that would each cross `sendto`, the driver
//! (a veth) and the receiver's TCP on their own.

use crate::backend::userspace::checksum;

/// Bytes of `struct virtio_net_hdr` (without `num_buffers`).
pub(crate) const VNET_HDR_LEN: usize = 10;
/// The largest IPv4 packet sent for cutting: under the 64 KiB GSO limit
/// of Linux drivers, with room for the Ethernet header.
pub(crate) const MAX_SEGMENT_IP_LEN: usize = 63 * 1024;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// Where the checksum field sits in a TCP header.
const TCP_CHECKSUM_OFFSET: u16 = 16;
const ETH_HEADER: usize = 14;

/// The `virtio_net_hdr` for an Ethernet frame that smoltcp made for a link
/// of `link_mtu` IP bytes. An IPv4 TCP segment longer than the link takes
/// is prepared for cutting: its checksum field becomes the pseudo-header
/// sum the kernel completes, and the header asks for segments of
/// `link_mtu` IP bytes. Anything else goes as it is (an all-zero header).
/// The kernel reads the header in host byte order (little-endian virtio).
pub(crate) fn vnet_header(frame: &mut [u8], link_mtu: usize) -> [u8; VNET_HDR_LEN] {
    let mut header = [0u8; VNET_HDR_LEN];
    if frame.len() <= ETH_HEADER + link_mtu {
        return header;
    }
    let Some((ip_len, tcp_len)) = checksum::write_tcp_pseudo_header_sum(frame) else {
        return header;
    };
    let headers = ip_len + tcp_len;
    let Some(segment_payload) = link_mtu.checked_sub(headers).filter(|&n| n > 0) else {
        return header;
    };
    let field = |value: usize| u16::try_from(value).unwrap_or(u16::MAX).to_ne_bytes();
    header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    header[1] = VIRTIO_NET_HDR_GSO_TCPV4;
    header[2..4].copy_from_slice(&field(ETH_HEADER + headers));
    header[4..6].copy_from_slice(&field(segment_payload));
    header[6..8].copy_from_slice(&field(ETH_HEADER + ip_len));
    header[8..10].copy_from_slice(&TCP_CHECKSUM_OFFSET.to_ne_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame (no options) with `payload` bytes.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut frame = vec![0u8; ETH_HEADER + 40 + payload];
        frame[12] = 0x08;
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        frame[23] = 6;
        frame[26..30].copy_from_slice(&[198, 18, 0, 2]);
        frame[30..34].copy_from_slice(&[198, 18, 0, 1]);
        frame[46] = 0x50;
        frame[50..52].copy_from_slice(&[0xab, 0xcd]);
        frame
    }

    fn u16_at(header: &[u8; VNET_HDR_LEN], at: usize) -> u16 {
        u16::from_ne_bytes([header[at], header[at + 1]])
    }

    #[test]
    fn a_segment_larger_than_the_link_is_cut_at_the_link_mss() {
        let mut frame = tcp_frame(10_000);
        let header = vnet_header(&mut frame, 1500);
        assert_eq!(header[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(header[1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(u16_at(&header, 2), 14 + 40, "hdr_len");
        assert_eq!(u16_at(&header, 4), 1460, "gso_size");
        assert_eq!(u16_at(&header, 6), 14 + 20, "csum_start");
        assert_eq!(u16_at(&header, 8), 16, "csum_offset");
        // The checksum field holds the pseudo-header sum, not inverted:
        // addresses, protocol and TCP length.
        let sum: u32 = 0xc612 + 0x0002 + 0xc612 + 0x0001 + 6 + 10_020;
        let folded = ((sum & 0xffff) + (sum >> 16)) as u16;
        assert_eq!(frame[50..52], folded.to_be_bytes());
    }

    #[test]
    fn tcp_options_shrink_the_cut() {
        let mut frame = tcp_frame(5_000);
        frame[46] = 0x80; // 32-byte TCP header
        let header = vnet_header(&mut frame, 1500);
        assert_eq!(u16_at(&header, 2), 14 + 52);
        assert_eq!(u16_at(&header, 4), 1448);
    }

    #[test]
    fn frames_the_link_takes_and_frames_that_are_not_tcp_go_as_they_are() {
        let mut small = tcp_frame(1460);
        let before = small.clone();
        assert_eq!(vnet_header(&mut small, 1500), [0; VNET_HDR_LEN]);
        assert_eq!(small, before, "a frame the link takes is not touched");
        let mut udp = tcp_frame(3000);
        udp[23] = 17;
        assert_eq!(vnet_header(&mut udp, 1500), [0; VNET_HDR_LEN]);
        let mut short = tcp_frame(3000);
        short.truncate(40);
        assert_eq!(vnet_header(&mut short, 1500), [0; VNET_HDR_LEN]);
    }
}
