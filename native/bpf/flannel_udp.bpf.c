// SPDX-License-Identifier: GPL-2.0
/*
 * flannel's udp wire in the kernel: two TC programs, the fast path of flannel-ts.
 *
 * flannel_egress (on flannel0, egress): a packet a pod sent into the overlay. Its destination is
 * looked up in the routes LPM map; TTL <= 1 is passed up (TypeScript counts it and answers ICMP
 * time exceeded), else TTL - 1 (incremental checksum fix);
 * 28 bytes of outer IPv4 + UDP (PublicIP:port -> peer's PublicIP:port, DF, TTL 64, UDP checksum
 * zero) go in front, with FIXED_GSO so that a TCP super-packet stays one inner segment per
 * datagram when the kernel cuts it; then out of the underlay with bpf_redirect_neigh (which
 * wants a MAC header: a zeroed Ethernet header goes on first and the neighbour fills it in).
 *
 * flannel_ingress (on the underlay interface, ingress): a UDP datagram to our PublicIP:port from
 * a known peer, not a fragment, carrying exactly one well-formed inner IPv4 packet whose source
 * lies in that peer's subnet and whose destination lies in ours: TTL - 1, the 28 bytes stripped
 * (FIXED_GSO), and into flannel0 as if received there (bpf_redirect with BPF_F_INGRESS).
 *
 * Contract with the TypeScript datapath (the slow path): whatever these programs do not handle
 * goes on unchanged (TC_ACT_UNSPEC: the next TC program or filter, then the stack), so flannel0's
 * reader and the UDP socket see it as if no program ran: a packet with no route (TypeScript
 * answers ICMP net unreachable), a UDP GSO super-datagram, a fragment, a malformed packet.
 * Drops the TypeScript datapath would make anyway are made here and counted under its names.
 *
 * Byte order: the config, routes and peers maps hold addresses and the port in network order.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define OUTER_LEN (sizeof(struct iphdr) + sizeof(struct udphdr))
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP_DF 0x4000

/* The one config record, written by the loader before the programs are attached. */
struct fastpath_config {
	__u32 public_ip;    /* our PublicIP: outer source, and the address datagrams must be sent to */
	__u32 subnet;       /* our subnet's network address */
	__u32 subnet_mask;  /* its mask */
	__u32 tun_ifindex;  /* flannel0 */
	__u32 ext_ifindex;  /* the underlay interface */
	__u32 mtu;          /* flannel0's MTU: the largest inner packet one datagram carries */
	__u16 port;         /* flannel's UDP port, both ends */
	__u16 pad;
};

struct route_key {
	__u32 prefixlen;
	__u32 addr;
};

struct route_value {
	__u32 public_ip;
};

/*
 * Counter slots: the order of FASTPATH_COUNTERS in src/fastpath/counters.ts. CNT_DROP_TX_TTL stays
 * for the layout, but egress no longer counts it: TTL <= 1 is passed up and counted by TypeScript.
 */
enum counter {
	CNT_UDP_SENT_PACKETS,
	CNT_UDP_SENT_BYTES,
	CNT_DROP_TX_TTL,
	CNT_TX_PASSED_UP,
	CNT_UDP_RECV_PACKETS,
	CNT_UDP_RECV_BYTES,
	CNT_TUN_WRITE_PACKETS,
	CNT_TUN_WRITE_BYTES,
	CNT_DROP_RX_UNKNOWN_SENDER,
	CNT_DROP_RX_SPOOFED_SOURCE,
	CNT_DROP_RX_NOT_FOR_US,
	CNT_DROP_RX_TTL,
	CNT_DROP_RX_OVERSIZE,
	CNT_RX_PASSED_UP,
	CNT_TX_REDIRECT_FAILED,
	CNT_RX_REDIRECT_FAILED,
	CNT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fastpath_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_key);
	__type(value, struct route_value);
} routes SEC(".maps");

/* Peers' PublicIPs: the senders whose datagrams are looked at; anyone else is a stranger. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += n;
}

static __always_inline const struct fastpath_config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* TTL - 1 at IPv4 header offset off with the RFC 1624 update of its checksum; ttl is the old TTL. */
static __always_inline int decrement_ttl(struct __sk_buff *skb, __u32 off, __u8 ttl, __u8 protocol)
{
	__be16 old_word = bpf_htons(((__u16)ttl << 8) | protocol);
	__be16 new_word = bpf_htons(((__u16)(ttl - 1) << 8) | protocol);
	__u8 new_ttl = ttl - 1;
	if (bpf_l3_csum_replace(skb, off + offsetof(struct iphdr, check), old_word, new_word, 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off + offsetof(struct iphdr, ttl), &new_ttl, 1, 0);
}

/*
 * A flannel datagram dropped here: counted as received (as the TypeScript datapath counts every
 * datagram it reads) and under the reason.
 */
static __always_inline int drop_rx(__u32 reason, __u32 segs, __u32 payload_bytes)
{
	count(CNT_UDP_RECV_PACKETS, segs);
	count(CNT_UDP_RECV_BYTES, payload_bytes);
	count(reason, segs);
	return TC_ACT_SHOT;
}

/* Segments an skb stands for: a GSO super-packet counts once per segment, as on the wire. */
static __always_inline __u32 segments_of(struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? skb->gso_segs : 1;
}

SEC("tc")
int flannel_egress(struct __sk_buff *skb)
{
	const struct fastpath_config *cfg = get_config();
	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data;
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		goto pass;
	__u32 inner_len = bpf_ntohs(ip->tot_len);
	/* A plain packet must be exactly what the IP header says; super-packets are the stack's own. */
	if (skb->gso_size == 0 && (inner_len != skb->len || inner_len > cfg->mtu))
		goto pass;
	/* UDP GSO (USO) super-packets are cut by the TypeScript datapath, one datagram each. */
	if (skb->gso_size != 0 && ip->protocol != IPPROTO_TCP)
		goto pass;

	struct route_key key = { .prefixlen = 32, .addr = ip->daddr };
	struct route_value *route = bpf_map_lookup_elem(&routes, &key);
	if (!route)
		goto pass; /* no route: TypeScript counts it and answers ICMP net unreachable */
	__u32 peer = route->public_ip;

	/* TTL runs out here: TypeScript counts the drop and answers ICMP time exceeded (rate-limited). */
	if (ip->ttl <= 1)
		goto pass;
	if (decrement_ttl(skb, 0, ip->ttl, ip->protocol) < 0)
		goto pass;

	__u32 segs = segments_of(skb);
	__u32 payload_bytes = skb->len;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
	if (bpf_skb_adjust_room(skb, OUTER_LEN, BPF_ADJ_ROOM_MAC, flags) < 0)
		goto failed;

	struct {
		struct iphdr ip;
		struct udphdr udp;
	} outer = {};
	outer.ip.version = 4;
	outer.ip.ihl = 5;
	outer.ip.tot_len = bpf_htons(skb->len);
	outer.ip.frag_off = bpf_htons(IP_DF);
	outer.ip.ttl = 64;
	outer.ip.protocol = IPPROTO_UDP;
	outer.ip.saddr = cfg->public_ip;
	outer.ip.daddr = peer;
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&outer.ip, sizeof(outer.ip), 0);
	if (sum < 0)
		goto failed;
	__u32 csum = (__u32)sum;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	outer.ip.check = (__u16)~csum;
	outer.udp.source = cfg->port;
	outer.udp.dest = cfg->port;
	outer.udp.len = bpf_htons(skb->len - sizeof(struct iphdr));
	outer.udp.check = 0; /* zero: no checksum (IPv4 allows it); the inner packet has its own */
	if (bpf_skb_store_bytes(skb, 0, &outer, sizeof(outer), 0) < 0)
		goto failed;

	/* bpf_redirect_neigh drops a packet without a MAC header: push a blank one to be filled in. */
	if (bpf_skb_change_head(skb, sizeof(struct ethhdr), 0) < 0)
		goto failed;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		goto failed;
	eth->h_proto = bpf_htons(ETH_P_IP);

	count(CNT_UDP_SENT_PACKETS, segs);
	count(CNT_UDP_SENT_BYTES, payload_bytes);
	return bpf_redirect_neigh(cfg->ext_ifindex, 0, 0, 0);

failed:
	/* The TTL is already spent and the packet half rewritten: never hand it up as well. */
	count(CNT_TX_REDIRECT_FAILED, segs);
	return TC_ACT_SHOT;

pass:
	count(CNT_TX_PASSED_UP, 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int flannel_ingress(struct __sk_buff *skb)
{
	const struct fastpath_config *cfg = get_config();
	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_UNSPEC;
	if (ip->protocol != IPPROTO_UDP || ip->daddr != cfg->public_ip || ip->version != 4)
		return TC_ACT_UNSPEC;
	/* A later fragment has no UDP header to judge it by: the stack reassembles it, as any other. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return TC_ACT_UNSPEC;
	if (ip->ihl != 5)
		goto pass; /* outer IP options: rare, left to the socket */
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		goto pass;
	if (udp->dest != cfg->port)
		return TC_ACT_UNSPEC; /* not flannel's port: none of our business */

	/* From here on the datagram is flannel's: strangers are dropped, oddities handed up. */
	__u32 sender = ip->saddr;
	__u32 segs = segments_of(skb);
	if (!bpf_map_lookup_elem(&peers, &sender)) {
		__u32 udp_len = bpf_ntohs(udp->len);
		return drop_rx(CNT_DROP_RX_UNKNOWN_SENDER, segs, udp_len > 8 ? udp_len - 8 : 0);
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		goto pass; /* a first fragment: the stack reassembles, the socket receives */

	struct iphdr *inner = (void *)(udp + 1);
	if ((void *)(inner + 1) > data_end)
		goto pass;
	if (inner->version != 4 || inner->ihl < 5)
		goto pass;
	__u32 outer_len = bpf_ntohs(ip->tot_len);
	__u32 inner_len = bpf_ntohs(inner->tot_len);
	/*
	 * Exactly one inner packet: the UDP payload is the inner packet, no more, no less. A UDP GSO
	 * super-datagram (several datagrams in one skb) fails this (its inner header describes the
	 * first datagram only); a UDP-tunnel GSO packet (one inner TCP super-packet under one outer
	 * header, cut by the kernel into one inner segment per datagram) passes it.
	 */
	if (skb->len != sizeof(struct ethhdr) + outer_len || bpf_ntohs(udp->len) != outer_len - sizeof(struct iphdr) ||
	    inner_len != outer_len - OUTER_LEN)
		goto pass;
	if (skb->gso_size == 0 && inner_len > cfg->mtu)
		return drop_rx(CNT_DROP_RX_OVERSIZE, 1, inner_len);

	/* The sender must be the peer whose subnet holds the inner source (one LPM lookup). */
	struct route_key key = { .prefixlen = 32, .addr = inner->saddr };
	struct route_value *route = bpf_map_lookup_elem(&routes, &key);
	if (!route || route->public_ip != sender)
		return drop_rx(CNT_DROP_RX_SPOOFED_SOURCE, segs, inner_len);
	if ((inner->daddr & cfg->subnet_mask) != cfg->subnet)
		return drop_rx(CNT_DROP_RX_NOT_FOR_US, segs, inner_len);
	if (inner->ttl <= 1)
		return drop_rx(CNT_DROP_RX_TTL, segs, inner_len);
	if (decrement_ttl(skb, sizeof(struct ethhdr) + OUTER_LEN, inner->ttl, inner->protocol) < 0)
		goto pass;
	if (bpf_skb_adjust_room(skb, -(__s32)OUTER_LEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO) < 0)
		return drop_rx(CNT_RX_REDIRECT_FAILED, segs, inner_len); /* the TTL is already spent */
	count(CNT_UDP_RECV_PACKETS, segs);
	count(CNT_UDP_RECV_BYTES, inner_len);
	count(CNT_TUN_WRITE_PACKETS, segs);
	count(CNT_TUN_WRITE_BYTES, inner_len);
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);

pass:
	count(CNT_RX_PASSED_UP, 1);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
