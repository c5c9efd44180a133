// Protocol constants of the encap layer, in one place: IP protocol numbers, header field offsets
// and flag bits, and the layout of struct virtio_net_hdr (the header flannel0 prefixes to every
// packet when opened with IFF_VNET_HDR; see include/uapi/linux/virtio_net.h).

/** IP protocol number of ICMP. */
export const IPPROTO_ICMP = 1;
/** IP protocol number of TCP. */
export const IPPROTO_TCP = 6;
/** IP protocol number of UDP. */
export const IPPROTO_UDP = 17;

/** Offset of the checksum field inside the TCP header. */
export const TCP_CHECK_OFFSET = 16;
/** Offset of the checksum field inside the UDP header. */
export const UDP_CHECK_OFFSET = 6;
/** Offset of the length field (header + payload bytes) inside the UDP header. */
export const UDP_LENGTH_OFFSET = 4;
/** Size of the UDP header. */
export const UDP_HEADER_LEN = 8;

/** TCP flag bits (TCP header byte 13). FIN: the sender's last byte. */
export const TCP_FLAG_FIN = 0x01;
/** PSH: deliver to the application now. */
export const TCP_FLAG_PSH = 0x08;
/** ACK: the acknowledgment number is valid. */
export const TCP_FLAG_ACK = 0x10;
/** CWR: congestion window reduced (ECN). */
export const TCP_FLAG_CWR = 0x80;

/** virtio_net_hdr.flags: the L4 checksum is partial (csum_start/csum_offset say where). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** virtio_net_hdr.gso_type: a TCP over IPv4 super-packet, to be cut at gso_size. */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** virtio_net_hdr.gso_type: a UDP super-datagram (IPv4 or IPv6), to be cut into datagrams of gso_size payload bytes. */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;

/** Size of struct virtio_net_hdr (without num_buffers): the bytes flannel0 reads and writes. */
export const VNET_HDR_LEN = 10;
/** Bytes reserved per slot in the slab's virtio-net header array: VNET_HDR_LEN, padded to 4. */
export const VNET_HDR_SLOT = 12;
/** virtio_net_hdr field offsets (u8 flags, u8 gso_type, then little-endian u16s). */
export const VNET_FLAGS = 0;
/** u8 gso_type. */
export const VNET_GSO_TYPE = 1;
/** u16 hdr_len: length of the headers before the payload. */
export const VNET_HDR_LEN_FIELD = 2;
/** u16 gso_size: payload bytes per segment. */
export const VNET_GSO_SIZE = 4;
/** u16 csum_start: where checksumming starts (from the packet's first byte). */
export const VNET_CSUM_START = 6;
/** u16 csum_offset: where the checksum goes, from csum_start. */
export const VNET_CSUM_OFFSET = 8;
