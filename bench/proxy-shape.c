/*
 * proxy-shape: a measurement reference for the latency bench (bench/latency.ts), NOT product code.
 *
 * flanneld's udp backend forwards through a small C proxy that cannot be shipped in this bench.
 * This program has that proxy's shape, so the bench can measure a stand-in of it in the same run
 * as everything else: one thread, poll() on a TUN device and a UDP socket and nothing else, one
 * packet per system call, no batching.
 *
 *   flannel0 readable: read() one IP packet, decrement its TTL (drop it if the TTL is 1 or less)
 *                      with an incremental header-checksum update (RFC 1624), sendto() the peer's
 *                      underlay address on port 8285 (flannel's wire format: the IP packet is the
 *                      datagram's payload).
 *   socket readable:   recv() one datagram, write() it to flannel0.
 *
 * What it is not: flanneld's code. It has one static peer (no route table, so no ICMP net
 * unreachable), no control socket, and it takes one packet per readiness (flanneld reads on
 * until both descriptors run dry).
 *
 * Usage: proxy-shape LOCAL_UNDERLAY_IP PEER_UNDERLAY_IP
 * Creates the TUN device flannel0 (IFF_TUN | IFF_NO_PI), binds LOCAL_UNDERLAY_IP:8285, prints
 * "ready" on stdout, then forwards until killed. The caller addresses flannel0 and brings it up.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define FLANNEL_UDP_PORT 8285
#define TUN_NAME "flannel0"
#define MAX_PACKET 65536

static int fail(const char *what) {
  fprintf(stderr, "proxy-shape: %s: %s\n", what, strerror(errno));
  return 1;
}

static int open_tun(void) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, TUN_NAME, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int parse_addr(const char *text, struct sockaddr_in *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_port = htons(FLANNEL_UDP_PORT);
  return inet_pton(AF_INET, text, &addr->sin_addr) == 1 ? 0 : -1;
}

/*
 * Decrements an IPv4 packet's TTL and patches its header checksum. Returns 0 when the packet
 * must be dropped: too short for an IPv4 header, not IPv4, or its TTL would reach 0.
 * The TTL is the high byte of the header's 16-bit word at offset 8, so the word drops by 0x0100
 * and the one's-complement checksum rises by as much (RFC 1624, eqn. 3), with the end-around carry.
 */
static int decrement_ttl(uint8_t *packet, ssize_t length) {
  if (length < 20 || (packet[0] >> 4) != 4 || packet[8] <= 1) return 0;
  packet[8] -= 1;
  uint32_t sum = ((uint32_t)packet[10] << 8 | packet[11]) + 0x0100;
  sum = (sum & 0xffff) + (sum >> 16);
  packet[10] = (uint8_t)(sum >> 8);
  packet[11] = (uint8_t)sum;
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: proxy-shape LOCAL_UNDERLAY_IP PEER_UNDERLAY_IP\n");
    return 2;
  }
  struct sockaddr_in local, peer;
  if (parse_addr(argv[1], &local) < 0 || parse_addr(argv[2], &peer) < 0) {
    fprintf(stderr, "proxy-shape: not IPv4 addresses: %s %s\n", argv[1], argv[2]);
    return 2;
  }
  int tun = open_tun();
  if (tun < 0) return fail("creating " TUN_NAME);
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return fail("socket");
  if (bind(sock, (struct sockaddr *)&local, sizeof local) < 0) return fail("bind");
  printf("ready\n");
  fflush(stdout);

  static uint8_t packet[MAX_PACKET];
  struct pollfd fds[2] = {{.fd = tun, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    // Errors drop the packet and forwarding goes on, as a forwarder's would: a send with no
    // neighbour yet or a full buffer; a datagram that is not an IP packet (the TUN refuses it).
    if (fds[0].revents & POLLIN) {
      ssize_t n = read(tun, packet, sizeof packet);
      if (n > 0 && decrement_ttl(packet, n)) sendto(sock, packet, (size_t)n, 0, (struct sockaddr *)&peer, sizeof peer);
    }
    if (fds[1].revents & (POLLIN | POLLERR)) {
      ssize_t n = recv(sock, packet, sizeof packet, 0);
      if (n > 0 && write(tun, packet, (size_t)n) != n) {
        // dropped (see above)
      }
    }
  }
}
