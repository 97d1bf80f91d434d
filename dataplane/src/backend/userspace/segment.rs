//! Software TCP segmentation: what a NIC with TSO, or the kernel's GSO,
//! does to a TCP segment larger than the link. The in-memory device cuts
//! with it when it models segmentation offload, and so does the tests'
//! impairing relay, which must impair frames as the wire carries them.

use super::checksum;

const ETH: usize = 14;
const FIN_PSH: u8 = 0x01 | 0x08;

/// Cuts the IPv4 TCP segment in the Ethernet `frame` into frames of at
/// most `max_frame` bytes, each with the original headers, its own IP
/// length, id and checksum, sequence number and TCP checksum, and the FIN
/// and PSH flags only on the last. Each piece is built in a buffer from
/// `new_piece` and handed to `emit`. Returns how many; 0 (nothing emitted)
/// if the frame is not IPv4 TCP or its headers leave no room.
pub fn cut_tcp_segment(
    frame: &[u8],
    max_frame: usize,
    mut new_piece: impl FnMut() -> Vec<u8>,
    mut emit: impl FnMut(Vec<u8>),
) -> usize {
    if frame.len() < ETH + 40 || frame[12..14] != [0x08, 0x00] || frame[ETH + 9] != 6 {
        return 0;
    }
    let ip_len = usize::from(frame[ETH] & 0x0f) * 4;
    if ip_len < 20 || frame.len() < ETH + ip_len + 20 {
        return 0;
    }
    let tcp_len = usize::from(frame[ETH + ip_len + 12] >> 4) * 4;
    let headers = ETH + ip_len + tcp_len;
    if tcp_len < 20 || headers >= frame.len() || headers >= max_frame {
        return 0;
    }
    let id = u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]);
    let at = ETH + ip_len + 4;
    let seq = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let chunk = max_frame - headers;
    let pieces = (frame.len() - headers).div_ceil(chunk);
    for (i, part) in frame[headers..].chunks(chunk).enumerate() {
        let mut piece = new_piece();
        piece.clear();
        piece.extend_from_slice(&frame[..headers]);
        piece.extend_from_slice(part);
        let ip_total = (ip_len + tcp_len + part.len()) as u16;
        piece[ETH + 2..ETH + 4].copy_from_slice(&ip_total.to_be_bytes());
        piece[ETH + 4..ETH + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        let offset = (i * chunk) as u32;
        piece[at..at + 4].copy_from_slice(&seq.wrapping_add(offset).to_be_bytes());
        if i + 1 < pieces {
            piece[ETH + ip_len + 13] &= !FIN_PSH;
        }
        checksum::write_ipv4_tcp_checksums(&mut piece);
        emit(piece);
    }
    pieces
}
