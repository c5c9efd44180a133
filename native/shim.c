/*
 * flannel-ts native shim: syscalls only, no packet logic.
 *
 * Contract (see native/README.md for the full ABI):
 *  - A "ring" binds, once, the slab (one Uint8Array cut into fixed slots) and the per-slot
 *    metadata arrays (lens Int32Array, addrs Uint32Array, ports Uint16Array) that JS owns.
 *    Batch calls then take only the ring, an fd and slot numbers: one call into C per batch.
 *  - Every batch call returns a count (>= 0) or -errno; the hot path never sees exceptions.
 *    Exceptions are thrown only for programming errors (wrong argument types).
 *  - IPv4 addresses cross the boundary as uint32 in host order (a.b.c.d = a<<24|b<<16|c<<8|d).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#define MAX_BATCH 1024
/* UDP GSO: at most this many segments and payload bytes in one message (kernel: 64 segments
   on older kernels; the IP total length must stay <= 65535). */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
/* TUN with IFF_VNET_HDR: every read and write carries a struct virtio_net_hdr first. The ring's
   vnet array holds one header per slot, VNET_SLOT bytes apart (used for group leaders). */
#define VNET_LEN ((int)sizeof(struct virtio_net_hdr))
#define VNET_SLOT 12
/* Most packets one coalesced TUN write may gather (the kernel's GSO limit is 64 segments). */
#define TUN_GROUP_MAX 64
/* The typed arrays a ring binds (besides the slab), by property name of the layout object. */
#define RING_ARRAYS 12

#define CHECK(call)                                                                  \
  do {                                                                               \
    if ((call) != napi_ok) {                                                         \
      napi_throw_error(env, NULL, "flannel-ts shim: N-API call failed: " #call);     \
      return NULL;                                                                   \
    }                                                                                \
  } while (0)

static napi_value make_int(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: too few arguments");
    return -1;
  }
  return 0;
}

static int get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: expected a number");
    return -1;
  }
  return 0;
}

static int get_u32(napi_env env, napi_value v, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: expected a number");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- clock */

/*
 * Residence timing (src/datapath/latency.ts): every packet a batch call brings in gets an arrival
 * stamp in stamps[slot], and every batch call writes the time it returned into ioClock[0], both in
 * microseconds of CLOCK_MONOTONIC (the clock of process.hrtime). A datagram's arrival is the
 * kernel's receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME, moved onto CLOCK_MONOTONIC once per
 * call); flannel0 has none, so a packet read from it is stamped with the moment its fd was seen
 * ready (the poll callback, or the return of the wait that completed the read), else with the
 * start of the read.
 */
static double clock_us(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}
static double mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

/* The moment this thread's poll callback saw an fd ready (0: not inside one); see watcher_cb. */
static __thread double ready_at_us;

/* ---------------------------------------------------------------- io_uring */

/*
 * An optional io_uring instance per ring, for TUN reads and writes: a batch of N readv/writev
 * goes to the kernel in one io_uring_enter instead of N syscalls. Every batch call submits and
 * then waits for all of its completions before it returns, so nothing is ever in flight between
 * calls: the iovecs below are reused, and the TUN fd holds no reference from the ring (closing
 * it removes the device as before).
 * O_NONBLOCK on the fd is not enough: for a file that supports IOCB_NOWAIT (a TUN does), io_uring
 * ignores O_NONBLOCK and arms a poll, so a read with no packet waiting would wait for one. Every
 * SQE therefore carries RWF_NOWAIT: such a read completes at once with -EAGAIN. (A file without
 * IOCB_NOWAIT support refuses RWF_NOWAIT with -EOPNOTSUPP; O_NONBLOCK then does the job.)
 */
/* The fewest readv SQEs a tunRead starts with. An SQE that finds no packet costs about as much
   as a whole readv syscall that gets EAGAIN (measured: ~650 ns on kernel 6.18 in a VM), so the
   window is kept as small as what the last call read. */
#define URING_READ_WINDOW_MIN 1

typedef struct {
  int fd;
  unsigned sq_entries;
  unsigned *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  unsigned *sq_flags;         /* IORING_SQ_TASKRUN: completions wait for an io_uring_enter to post them */
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map, *sqe_map;
  size_t sq_map_len, cq_map_len, sqe_map_len;
  unsigned features;          /* IORING_FEAT_* of the instance */
  unsigned read_window;       /* readv SQEs the next tunRead submits first (adaptive) */
  int rw_flags;               /* RWF_NOWAIT, or 0 once the file refused it */
  int32_t res[MAX_BATCH];     /* per SQE of the batch (user_data = index): its result */
  struct iovec iovs[2 * MAX_BATCH + TUN_GROUP_MAX + 1];
  /* tunWrite: per write of a chunk, where its packets start in the list, how many, its iovecs,
     its result; and the writes to submit again after -EAGAIN */
  uint32_t unit_first[MAX_BATCH];
  uint16_t unit_k[MAX_BATCH], unit_iov[MAX_BATCH], unit_niov[MAX_BATCH], pending[MAX_BATCH];
  int32_t unit_res[MAX_BATCH];
} uring_t;

static void uring_free(uring_t *u) {
  if (!u) return;
  if (u->sqe_map && u->sqe_map != MAP_FAILED) munmap(u->sqe_map, u->sqe_map_len);
  if (u->cq_map && u->cq_map != MAP_FAILED && u->cq_map != u->sq_map) munmap(u->cq_map, u->cq_map_len);
  if (u->sq_map && u->sq_map != MAP_FAILED) munmap(u->sq_map, u->sq_map_len);
  if (u->fd >= 0) close(u->fd);
  free(u);
}

/* A new instance with at least `entries` SQEs, or NULL with errno set. extra: setup flags wanted
   beside DEFER_TASKRUN (dropped with it on kernels that refuse it). */
static uring_t *uring_new(unsigned entries, unsigned extra) {
  uring_t *u = calloc(1, sizeof *u);
  if (!u) return NULL;
  u->fd = -1;
  struct io_uring_params p;
  /* One thread submits and reaps (SINGLE_ISSUER); task work runs only when we wait (DEFER_TASKRUN). */
  const unsigned flag_sets[] = {
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | extra,
      IORING_SETUP_SUBMIT_ALL, 0};
  for (unsigned i = 0; i < sizeof flag_sets / sizeof flag_sets[0] && u->fd < 0; i++) {
    memset(&p, 0, sizeof p);
    p.flags = flag_sets[i];
    u->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (u->fd < 0 && errno != EINVAL) break;
  }
  if (u->fd < 0) goto fail;
  u->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  u->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (p.features & IORING_FEAT_SINGLE_MMAP) {
    if (u->cq_map_len > u->sq_map_len) u->sq_map_len = u->cq_map_len;
    u->cq_map_len = u->sq_map_len;
  }
  u->sq_map = mmap(NULL, u->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQ_RING);
  if (u->sq_map == MAP_FAILED) goto fail;
  u->cq_map = (p.features & IORING_FEAT_SINGLE_MMAP)
                  ? u->sq_map
                  : mmap(NULL, u->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_CQ_RING);
  if (u->cq_map == MAP_FAILED) goto fail;
  u->sqe_map_len = p.sq_entries * sizeof(struct io_uring_sqe);
  u->sqe_map = mmap(NULL, u->sqe_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQES);
  if (u->sqe_map == MAP_FAILED) goto fail;
  uint8_t *sq = u->sq_map, *cq = u->cq_map;
  u->sq_entries = p.sq_entries;
  u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  u->sq_array = (unsigned *)(sq + p.sq_off.array);
  u->cq_head = (unsigned *)(cq + p.cq_off.head);
  u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  u->sq_flags = (unsigned *)(sq + p.sq_off.flags);
  u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  u->sqes = u->sqe_map;
  /* SQ slot i always holds SQE i: the array is an identity map, written once. */
  for (unsigned i = 0; i < p.sq_entries; i++) u->sq_array[i] = i;
  u->read_window = URING_READ_WINDOW_MIN;
  u->rw_flags = RWF_NOWAIT;
  u->features = p.features;
  return u;
fail:;
  int e = errno;
  uring_free(u);
  errno = e;
  return NULL;
}

/* The SQE for the batch's i-th request (i < sq_entries), cleared, with user_data = i. */
static struct io_uring_sqe *uring_sqe(uring_t *u, unsigned i, int op, int fd, const struct iovec *iov, unsigned n) {
  unsigned tail = *u->sq_tail; /* only this thread writes the tail */
  struct io_uring_sqe *sqe = &u->sqes[(tail + i) & *u->sq_mask];
  memset(sqe, 0, sizeof *sqe);
  sqe->opcode = (uint8_t)op;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)iov;
  sqe->len = n;
  sqe->off = (uint64_t)-1; /* the file position: a TUN has none */
  sqe->rw_flags = u->rw_flags;
  sqe->user_data = i;
  return sqe;
}

/*
 * Submits the batch's n prepared SQEs (n <= sq_entries) in one io_uring_enter and waits for all
 * n completions; res[i] = the result of SQE i. 0, or -errno if the ring itself failed (the
 * caller then drops the ring: its state is unknown).
 */
static int uring_run(uring_t *u, unsigned n) {
  unsigned tail = *u->sq_tail;
  __atomic_store_n(u->sq_tail, tail + n, __ATOMIC_RELEASE);
  unsigned to_submit = n, reaped = 0;
  while (reaped < n) {
    unsigned head = *u->cq_head, ctail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
    for (; head != ctail; head++) {
      const struct io_uring_cqe *cqe = &u->cqes[head & *u->cq_mask];
      if (cqe->user_data < n) u->res[cqe->user_data] = cqe->res;
      reaped++;
    }
    __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
    if (reaped >= n) break;
    long ret = syscall(__NR_io_uring_enter, u->fd, to_submit, n - reaped, IORING_ENTER_GETEVENTS, NULL, 0);
    if (ret < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EBUSY) continue;
      return -errno;
    }
    to_submit -= (unsigned)ret < to_submit ? (unsigned)ret : to_submit;
  }
  return 0;
}

/* ---------------------------------------------------------------- ring */

typedef struct {
  uint8_t *slab;
  size_t slab_len;
  uint32_t slot_count;
  uint32_t *slot_offs; /* per slot: where its bytes start in the slab */
  uint32_t *slot_caps; /* per slot: how many bytes a read or receive may put there */
  int32_t *lens;
  uint32_t *addrs;
  uint16_t *ports;
  uint16_t *offs;  /* per slot: where the bytes to write start (payload of a coalesced member) */
  uint8_t *vnet;   /* per slot: a virtio_net_hdr (a read's, or a coalesced group leader's) */
  uint32_t *ext_offs; /* per slot: a second part sent after the slot's bytes (a segment's payload) */
  uint16_t *ext_lens; /* per slot: its length (0: none) */
  uint16_t *seg_sizes; /* per slot: after a receive, the UDP GRO segment size (0: one datagram) */
  double *stamps;      /* per slot: when the packet arrived (µs, CLOCK_MONOTONIC) */
  double *io_clock;    /* [0]: when the last batch call returned (µs, CLOCK_MONOTONIC) */
  int tun_vnet;    /* the TUN fd was opened with IFF_VNET_HDR */
  napi_ref refs[RING_ARRAYS + 1]; /* keep the JS arrays alive as long as the ring lives */
  int last_errno;   /* errno of the last packet a batch call skipped */
  int udp_gro;      /* udpRecv asks for the UDP GRO segment size */
  /* scratch for recvmmsg/sendmmsg, preallocated once (a sent datagram takes up to 2 iovecs) */
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iovs[2 * MAX_BATCH];
  struct sockaddr_in names[MAX_BATCH];
  /* udpSend: the slot and length of each datagram, and each message's first datagram and count */
  uint16_t slot_of[MAX_BATCH];
  uint32_t dgram_len[MAX_BATCH];
  uint16_t msg_first[MAX_BATCH];
  uint16_t msg_segs[MAX_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct timespec))];
    struct cmsghdr align;
  } ctrl[MAX_BATCH];
  uint32_t gso_segments; /* 0 = UDP GSO off; else the most segments per message */
  uring_t *uring;        /* NULL: TUN reads and writes are plain syscalls */
  struct waiter *waiter; /* waitOpen: polls kept armed in an io_uring of their own */
  struct spinner *spinner; /* busy-polling after traffic (waitOpen's spinUs, or ringSetSpin); NULL: off */
} ring_t;

static void waiter_free(ring_t *r);
static void spinner_free(struct spinner *s);

/* The bytes of slot s, when [off, off + need) lies inside the slab; else NULL. JS owns the
   offsets, so every use is checked: a bad offset is an EINVAL for that packet, never a stray access. */
static uint8_t *slot_ptr(const ring_t *r, uint32_t s, size_t need) {
  if (s >= r->slot_count) return NULL;
  size_t off = r->slot_offs[s];
  if (off > r->slab_len || need > r->slab_len - off) return NULL;
  return r->slab + off;
}

static void ring_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  ring_t *r = data;
  /* Reads still posted write into the slab and its arrays: cancel them while the references
     still keep those alive. */
  waiter_free(r);
  spinner_free(r->spinner);
  uring_free(r->uring);
  for (int i = 0; i < RING_ARRAYS + 1; i++)
    if (r->refs[i]) napi_delete_reference(env, r->refs[i]);
  free(r);
}

static int typed_array(napi_env env, napi_value v, napi_typedarray_type want, void **data,
                       size_t *length) {
  bool is_ta = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, length, data, &ab, &off) != napi_ok ||
      type != want) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: wrong typed array");
    return -1;
  }
  return 0;
}

/*
 * createRing(slab: Uint8Array, layout) where layout holds, per slot, the typed arrays named below
 * (a PacketSlab is such an object). slotOffsets.length is the slot count; every other array must
 * cover it (vnetHdrs: 12 bytes per slot).
 */
static const struct {
  const char *name;
  napi_typedarray_type type;
  size_t per_slot;
} ring_arrays[RING_ARRAYS] = {
    {"slotOffsets", napi_uint32_array, 1}, {"slotCaps", napi_uint32_array, 1},
    {"lens", napi_int32_array, 1},         {"addrs", napi_uint32_array, 1},
    {"ports", napi_uint16_array, 1},       {"offs", napi_uint16_array, 1},
    {"vnetHdrs", napi_uint8_array, VNET_SLOT}, {"extOffs", napi_uint32_array, 1},
    {"extLens", napi_uint16_array, 1},     {"segSizes", napi_uint16_array, 1},
    {"stamps", napi_float64_array, 1},     {"ioClock", napi_float64_array, 0},
};

static napi_value create_ring(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = calloc(1, sizeof(ring_t));
  if (!r) {
    napi_throw_error(env, NULL, "flannel-ts shim: out of memory");
    return NULL;
  }
  void *p, *data[RING_ARRAYS];
  size_t n[RING_ARRAYS];
  napi_value arrays[RING_ARRAYS];
  if (typed_array(env, argv[0], napi_uint8_array, &p, &r->slab_len)) goto fail;
  r->slab = p;
  for (int i = 0; i < RING_ARRAYS; i++) {
    if (napi_get_named_property(env, argv[1], ring_arrays[i].name, &arrays[i]) != napi_ok ||
        typed_array(env, arrays[i], ring_arrays[i].type, &data[i], &n[i]))
      goto fail;
  }
  r->slot_count = (uint32_t)n[0];
  for (int i = 0; i < RING_ARRAYS; i++) {
    size_t need = ring_arrays[i].per_slot ? r->slot_count * ring_arrays[i].per_slot : 1;
    if (r->slot_count == 0 || r->slot_count > 65536 || n[i] < need) {
      napi_throw_range_error(env, NULL, "flannel-ts shim: layout arrays shorter than the slot count");
      goto fail;
    }
  }
  r->slot_offs = data[0];
  r->slot_caps = data[1];
  r->lens = data[2];
  r->addrs = data[3];
  r->ports = data[4];
  r->offs = data[5];
  r->vnet = data[6];
  r->ext_offs = data[7];
  r->ext_lens = data[8];
  r->seg_sizes = data[9];
  r->stamps = data[10];
  r->io_clock = data[11];
  napi_create_reference(env, argv[0], 1, &r->refs[0]);
  for (int i = 0; i < RING_ARRAYS; i++) napi_create_reference(env, arrays[i], 1, &r->refs[i + 1]);
  napi_value ext;
  if (napi_create_external(env, r, ring_finalize, NULL, &ext) != napi_ok) {
    ring_finalize(env, r, NULL);
    return NULL;
  }
  return ext;
fail:
  free(r);
  return NULL;
}

static ring_t *get_ring(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: expected a ring");
    return NULL;
  }
  return p;
}

/* The ring of a call whose one argument is a ring (NULL with a pending exception otherwise). */
static ring_t *only_ring_arg(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  return get_ring(env, argv[0]);
}

/* Validates a run of slots [first, first+count) and clamps count to MAX_BATCH. */
static int check_run(ring_t *r, uint32_t first, uint32_t *count) {
  if (*count > MAX_BATCH) *count = MAX_BATCH;
  if (first > r->slot_count || *count > r->slot_count - first) return -EINVAL;
  return 0;
}

/* The (ring, fd, first, max) arguments of tunRead and udpRecv, the run checked (check_run): the
   ring; NULL with a JS exception pending, or with *bad_run set for a run outside the slab. */
static ring_t *get_run_args(napi_env env, napi_callback_info info, int32_t *fd, uint32_t *first, uint32_t *max,
                            int *bad_run) {
  napi_value argv[4];
  if (get_args(env, info, 4, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], fd) || get_u32(env, argv[2], first) || get_u32(env, argv[3], max)) return NULL;
  if (check_run(r, *first, max)) {
    *bad_run = 1;
    return NULL;
  }
  return r;
}

/* ---------------------------------------------------------------- TUN */

/*
 * openTun(name, vnetHdr: boolean) -> fd | -errno. name may hold a %d pattern ("flannel%d").
 * With vnetHdr the device is IFF_VNET_HDR: reads and writes carry a virtio_net_hdr (handled here:
 * JS sees plain packets) and writes may be GSO super-packets. No TUNSETOFFLOAD: the kernel still
 * hands us only complete, checksummed packets.
 */
static napi_value open_tun(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool vnet = false;
  if (get_args(env, info, 2, argv)) return NULL;
  if (napi_get_value_bool(env, argv[1], &vnet) != napi_ok) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: expected a boolean");
    return NULL;
  }
  char name[IFNAMSIZ];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "flannel-ts shim: expected a device name");
    return NULL;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return make_int(env, -errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, len < IFNAMSIZ ? len : IFNAMSIZ - 1);
  int hdr = VNET_LEN;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0 || (vnet && ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)) {
    int e = errno;
    close(fd);
    return make_int(env, -e);
  }
  return make_int(env, fd);
}

/* ringSetTunVnet(ring, on): the TUN fd this ring reads and writes was opened with vnetHdr. */
static napi_value ring_set_tun_vnet(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool on;
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || napi_get_value_bool(env, argv[1], &on) != napi_ok) return NULL;
  r->tun_vnet = on;
  return NULL;
}

/*
 * tunSetOffload(fd, flags) -> 0 | -errno: TUNSETOFFLOAD (TUN_F_CSUM 1, TUN_F_TSO4 2, ...). The
 * fd must have IFF_VNET_HDR. Reads may then be GSO super-packets or carry partial checksums.
 */
static napi_value tun_set_offload(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  uint32_t flags;
  if (get_args(env, info, 2, argv) || get_i32(env, argv[0], &fd) || get_u32(env, argv[1], &flags)) return NULL;
  return make_int(env, ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0);
}

/* tunName(fd) -> the device's name, or "" if fd is not a TUN. */
static napi_value tun_name(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &fd)) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  napi_value s;
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) ifr.ifr_name[0] = 0;
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &s);
  return s;
}

/* Times tunWrite waits (1 ms each at most) for POLLOUT and submits -EAGAIN writes again. */
#define TUN_WRITE_EAGAIN_TRIES 8

/* Drops the ring's io_uring after it failed: TUN I/O goes back to plain syscalls. */
static void uring_drop(ring_t *r, int err) {
  r->last_errno = err;
  uring_free(r->uring);
  r->uring = NULL;
}

/*
 * tunRead through io_uring, same contract as the syscall path. A round submits `window` readv
 * SQEs for the next slots in one io_uring_enter; they are issued in order, each non-blocking,
 * so the queued packets fill the first ones and the rest complete with -EAGAIN. A round that
 * got a packet for every SQE is followed by a round twice as big (up to max); the next call
 * starts with as many SQEs as this one read packets, so that a nearly idle TUN does not pay for
 * `max` failed reads per wake-up.
 *
 * Unlinked SQEs (a link is severed by a read shorter than the buffer, i.e. by every read) can
 * leave a gap: a packet that arrives between two SQEs' issue lands after an -EAGAIN. Packets are
 * then moved down so that they fill slots first, first+1, ... in the order read (a copy; with a
 * sender on the other CPU, ~8% of packets in test/integration/tun-uring.test.ts's race).
 */
static int64_t tun_read_uring(ring_t *r, int fd, uint32_t first, uint32_t max) {
  uring_t *u = r->uring;
  uint32_t n = 0;
  int err = 0;
  unsigned window = u->read_window;
  while (n < max) {
    unsigned k = window < max - n ? window : max - n;
    if (k > u->sq_entries) k = u->sq_entries;
    uint32_t base = first + n;
    unsigned prepared = 0;
    for (; prepared < k; prepared++) {
      uint32_t slot = base + prepared;
      uint8_t *buf = slot_ptr(r, slot, r->slot_caps[slot]);
      if (!buf) break;
      struct iovec *iov = &u->iovs[2 * prepared];
      iov[0].iov_base = r->vnet + (size_t)slot * VNET_SLOT;
      iov[0].iov_len = VNET_LEN;
      iov[1].iov_base = buf;
      iov[1].iov_len = r->slot_caps[slot];
      if (r->tun_vnet)
        uring_sqe(u, prepared, IORING_OP_READV, fd, iov, 2);
      else
        uring_sqe(u, prepared, IORING_OP_READV, fd, iov + 1, 1);
    }
    if (prepared == 0) return n > 0 ? (int64_t)n : -EINVAL;
    int rc = uring_run(u, prepared);
    if (rc < 0) {
      uring_drop(r, -rc);
      return n > 0 ? (int64_t)n : rc;
    }
    if (u->res[0] == -EOPNOTSUPP && u->rw_flags) { /* this file has no RWF_NOWAIT: rely on O_NONBLOCK */
      u->rw_flags = 0;
      continue;
    }
    unsigned got = 0, drained = 0;
    for (unsigned i = 0; i < prepared; i++) {
      int32_t res = u->res[i];
      if (res < 0) {
        if (res == -EAGAIN) drained = 1;
        else if (!err) err = -res;
        continue;
      }
      uint32_t src = base + i, dst = first + n;
      int32_t len = r->tun_vnet ? res - VNET_LEN : res;
      if (len < 0) len = 0; /* length 0: JS drops and counts it as malformed */
      if (dst != src) {
        uint8_t *to = (uint32_t)len <= r->slot_caps[dst] ? slot_ptr(r, dst, (size_t)len) : NULL;
        uint8_t *from = slot_ptr(r, src, (size_t)len);
        if (!to || !from) continue;
        memmove(to, from, (size_t)len);
        memcpy(r->vnet + (size_t)dst * VNET_SLOT, r->vnet + (size_t)src * VNET_SLOT, VNET_SLOT);
      }
      if (!r->tun_vnet) memset(r->vnet + (size_t)dst * VNET_SLOT, 0, VNET_LEN);
      r->lens[dst] = len;
      n++;
      got++;
    }
    if (drained || err || got < prepared || prepared < k) break;
    window = window * 2 < max ? window * 2 : max;
  }
  u->read_window = n < URING_READ_WINDOW_MIN ? URING_READ_WINDOW_MIN : n;
  if (err) {
    if (n == 0) return -err;
    r->last_errno = err;
  }
  return n;
}

static int64_t tun_read_syscalls_or_uring(ring_t *r, int fd, uint32_t first, uint32_t max);

/*
 * tunRead(ring, fd, first, max) -> n | -errno
 * Reads packets into slots first, first+1, ... until EAGAIN or max; lens[slot] = bytes, and
 * vnet[slot] = the packet's virtio_net_hdr (all zero without IFF_VNET_HDR): with TUNSETOFFLOAD
 * a read may be a GSO super-packet or carry a partial checksum, which JS completes or segments.
 * A slot takes at most slotCaps[slot] bytes. An error after at least one packet ends the batch
 * and is reported by the next call.
 */
static napi_value tun_read(napi_env env, napi_callback_info info) {
  int32_t fd;
  uint32_t first, max;
  int bad_run = 0;
  ring_t *r = get_run_args(env, info, &fd, &first, &max, &bad_run);
  if (!r) return bad_run ? make_int(env, -EINVAL) : NULL;
  double ready = ready_at_us > 0 ? ready_at_us : mono_us();
  ready_at_us = 0; /* a second read in the same wake-up finds packets that came later */
  int64_t n = tun_read_syscalls_or_uring(r, fd, first, max);
  for (int64_t i = 0; i < n; i++) r->stamps[first + (uint32_t)i] = ready;
  r->io_clock[0] = mono_us();
  return make_int(env, n);
}

/* One read of a packet from flannel0 into slot (and its virtio header into vnet[slot]; zeroed
   without IFF_VNET_HDR): 1, 0 (EAGAIN) or -errno. */
static int tun_read_one(ring_t *r, int fd, uint32_t slot) {
  uint8_t *vh = r->vnet + (size_t)slot * VNET_SLOT;
  uint8_t *buf = slot_ptr(r, slot, r->slot_caps[slot]);
  if (!buf) return -EINVAL;
  struct iovec iov[2] = {{vh, VNET_LEN}, {buf, r->slot_caps[slot]}};
  ssize_t got;
  while ((got = r->tun_vnet ? readv(fd, iov, 2) : read(fd, buf, r->slot_caps[slot])) < 0 && errno == EINTR) {
  }
  if (got < 0) return errno == EAGAIN ? 0 : -errno;
  if (r->tun_vnet) {
    got -= VNET_LEN;
    if (got < 0) got = 0; /* length 0: JS drops and counts it as malformed */
  } else {
    memset(vh, 0, VNET_LEN);
  }
  r->lens[slot] = (int32_t)got;
  return 1;
}

/* tunRead's reads (io_uring or one readv per packet): count or -errno. */
static int64_t tun_read_syscalls_or_uring(ring_t *r, int fd, uint32_t first, uint32_t max) {
  if (r->uring) return tun_read_uring(r, fd, first, max);
  uint32_t n = 0;
  while (n < max) {
    int rc = tun_read_one(r, fd, first + n);
    if (rc < 0 && n == 0) return rc;
    if (rc <= 0) break;
    n++;
  }
  return n;
}

/* The packets the write at list position i gathers: groups[i] for a coalesced run, else 1. */
static uint32_t tun_write_unit(const uint16_t *groups, const ring_t *r, uint32_t count, uint32_t i) {
  uint32_t k = (groups && r->tun_vnet && groups[i] > 1) ? groups[i] : 1;
  return k > TUN_GROUP_MAX || k > count - i ? 1 : k;
}

/* The iovecs (at most TUN_GROUP_MAX + 1) of the write of list[i..i+k): their count, or -1 if a
   slot is invalid. */
static int tun_write_iov(const ring_t *r, const uint16_t *list, uint32_t i, uint32_t k, struct iovec *iov) {
  static const struct virtio_net_hdr plain_hdr; /* all zero: a complete, checksummed packet */
  int n = 0;
  if (r->tun_vnet) {
    iov[n].iov_base = k > 1 ? (void *)(r->vnet + (size_t)list[i] * VNET_SLOT) : (void *)&plain_hdr;
    iov[n++].iov_len = VNET_LEN;
  }
  for (uint32_t j = 0; j < k; j++) {
    uint32_t slot = list[i + j];
    uint8_t *buf = slot < r->slot_count && r->lens[slot] >= 0 ? slot_ptr(r, slot, (size_t)r->lens[slot]) : NULL;
    uint32_t start = j == 0 || !buf ? 0 : r->offs[slot];
    if (!buf || start > (uint32_t)r->lens[slot]) return -1;
    iov[n].iov_base = buf + start;
    iov[n++].iov_len = (size_t)r->lens[slot] - start;
  }
  return n;
}

/* The write of list[i..i+k) failed: each of its slots gets lens = -err (tells JS which were lost). */
static void tun_write_failed(ring_t *r, const uint16_t *list, uint32_t i, uint32_t k, int err) {
  r->last_errno = err;
  for (uint32_t j = 0; j < k; j++)
    if (list[i + j] < r->slot_count) r->lens[list[i + j]] = -err;
}

/* After -EAGAIN: waits for POLLOUT, 1 ms at most. */
static void tun_wait_writable(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLOUT};
  poll(&pfd, 1, 1);
}

/*
 * tunWrite through io_uring, same contract as the syscall path: the writes of a chunk (as many
 * as the SQ holds) go as one WRITEV SQE each in one io_uring_enter, issued in list order. Writes
 * that complete with -EAGAIN are submitted again, together, after a POLLOUT wait (so, unlike the
 * syscall path, a retried write may land after the chunk's later writes).
 */
static uint32_t tun_write_uring(ring_t *r, int fd, const uint16_t *list, uint32_t count, const uint16_t *groups,
                                uint32_t *stopped) {
  uring_t *u = r->uring;
  const unsigned iov_cap = sizeof u->iovs / sizeof u->iovs[0];
  uint32_t ok = 0;
  int failed = 0; /* the ring itself failed: -errno */
  uint32_t i = 0;
  while (i < count && !failed) {
    unsigned w = 0, niov = 0;
    while (i < count && w < u->sq_entries && w < MAX_BATCH && niov + TUN_GROUP_MAX + 1 <= iov_cap) {
      uint32_t k = tun_write_unit(groups, r, count, i);
      int n = tun_write_iov(r, list, i, k, &u->iovs[niov]);
      if (n < 0) {
        tun_write_failed(r, list, i, k, EINVAL);
      } else {
        u->unit_first[w] = i;
        u->unit_k[w] = (uint16_t)k;
        u->unit_iov[w] = (uint16_t)niov;
        u->unit_niov[w] = (uint16_t)n;
        u->pending[w] = (uint16_t)w;
        w++;
        niov += (unsigned)n;
      }
      i += k;
    }
    unsigned npending = w;
    for (int tries = 0; npending > 0; tries++) {
      for (unsigned j = 0; j < npending; j++) {
        unsigned unit = u->pending[j];
        uring_sqe(u, j, IORING_OP_WRITEV, fd, &u->iovs[u->unit_iov[unit]], u->unit_niov[unit]);
      }
      int rc = uring_run(u, npending);
      if (rc < 0) { /* whether these went out is unknown: counted as lost */
        for (unsigned j = 0; j < npending; j++) u->unit_res[u->pending[j]] = rc;
        failed = rc;
        break;
      }
      if (u->res[0] == -EOPNOTSUPP && u->rw_flags) { /* this file has no RWF_NOWAIT: rely on O_NONBLOCK */
        u->rw_flags = 0;
        tries--;
        continue;
      }
      unsigned again = 0;
      for (unsigned j = 0; j < npending; j++) {
        unsigned unit = u->pending[j];
        int32_t res = u->res[j];
        u->unit_res[unit] = res;
        if ((res == -EAGAIN && tries < TUN_WRITE_EAGAIN_TRIES) || res == -EINTR) u->pending[again++] = (uint16_t)unit;
      }
      npending = again;
      if (npending > 0) tun_wait_writable(fd);
    }
    for (unsigned unit = 0; unit < w; unit++) {
      if (u->unit_res[unit] >= 0)
        ok += u->unit_k[unit];
      else
        tun_write_failed(r, list, u->unit_first[unit], u->unit_k[unit], -u->unit_res[unit]);
    }
  }
  /* The ring failed: drop it only now that its arrays are read; what was never submitted
     (list[i..count)) is left to the caller's syscall path. */
  if (failed) uring_drop(r, -failed);
  *stopped = i;
  return ok;
}

/*
 * tunWrite(ring, fd, list: Uint16Array, count, groups: Uint16Array | null) -> packets written
 * Writes slots list[0..count) with their lens. With groups (a TUN opened with vnetHdr only), a
 * coalesced run is ONE write: groups[i] = k >= 2 at the leader's position i gathers, with writev,
 * vnet[leader] (its virtio_net_hdr), the leader's lens bytes and each of the next k-1 slots'
 * bytes from offs[slot] on; groups[i] = 1 is a plain packet. A write that fails is skipped and
 * each of its slots gets lens[slot] = -errno; EAGAIN waits for POLLOUT briefly.
 */
static napi_value tun_write(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd;
  uint32_t count;
  void *p, *g = NULL;
  size_t list_len, groups_len = 0;
  napi_valuetype gtype;
  if (get_args(env, info, 5, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &fd) || typed_array(env, argv[2], napi_uint16_array, &p, &list_len) ||
      get_u32(env, argv[3], &count))
    return NULL;
  if (napi_typeof(env, argv[4], &gtype) == napi_ok && gtype != napi_null && gtype != napi_undefined &&
      typed_array(env, argv[4], napi_uint16_array, &g, &groups_len))
    return NULL;
  uint16_t *list = p, *groups = g;
  if (count > list_len) count = (uint32_t)list_len;
  if (groups && groups_len < count) groups = NULL;
  uint32_t ok = 0, i = 0;
  if (r->uring) {
    ok = tun_write_uring(r, fd, list, count, groups, &i);
    if (i >= count) {
      r->io_clock[0] = mono_us();
      return make_int(env, ok);
    }
  }
  struct iovec iov[TUN_GROUP_MAX + 1];
  while (i < count) {
    uint32_t k = tun_write_unit(groups, r, count, i);
    int n = tun_write_iov(r, list, i, k, iov);
    int err = n < 0 ? EINVAL : 0;
    for (int tries = 0; !err;) {
      if (writev(fd, iov, n) >= 0) break;
      if (errno == EINTR) continue;
      if (errno == EAGAIN && tries++ < TUN_WRITE_EAGAIN_TRIES) {
        tun_wait_writable(fd);
        continue;
      }
      err = errno;
    }
    if (err)
      tun_write_failed(r, list, i, k, err);
    else
      ok += k;
    i += k;
  }
  r->io_clock[0] = mono_us();
  return make_int(env, ok);
}

/*
 * ringEnableUring(ring, entries) -> 0 | -errno: TUN reads and writes of this ring go through an
 * io_uring instance of `entries` SQEs (1..1024; a batch bigger than that takes more than one
 * io_uring_enter). On -errno (ENOSYS, EPERM: io_uring missing or disabled by
 * kernel.io_uring_disabled, ENOMEM) nothing changed: plain syscalls stay in force. If the
 * instance fails later, the ring drops it and goes back to syscalls for good.
 */
static napi_value ring_enable_uring(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t entries;
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_u32(env, argv[1], &entries)) return NULL;
  if (entries == 0 || entries > MAX_BATCH) return make_int(env, -EINVAL);
  if (r->uring) return make_int(env, 0);
  r->uring = uring_new(entries, 0);
  return make_int(env, r->uring ? 0 : -errno);
}

/* ringDisableUring(ring): closes the ring's io_uring now (at Datapath.close; else it would live
   until the ring is garbage-collected); TUN I/O of the ring uses plain syscalls from then on. */
static napi_value ring_disable_uring(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  uring_free(r->uring);
  r->uring = NULL;
  return NULL;
}

/* ringUring(ring) -> the SQ entries of its io_uring, 0 when TUN I/O uses plain syscalls. */
static napi_value ring_uring(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  return make_int(env, r->uring ? r->uring->sq_entries : 0);
}

/* ---------------------------------------------------------------- UDP */

/* udpOpen(addr u32, port, rcvbuf, sndbuf) -> fd | -errno. Non-blocking, bound to addr:port. */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t addr, port, rcvbuf, sndbuf;
  if (get_args(env, info, 4, argv) || get_u32(env, argv[0], &addr) || get_u32(env, argv[1], &port) ||
      get_u32(env, argv[2], &rcvbuf) || get_u32(env, argv[3], &sndbuf))
    return NULL;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_int(env, -errno);
  int size;
  /* FORCE variants pass the rmem_max/wmem_max caps (we are root); fall back if refused. */
  if (rcvbuf) {
    size = (int)rcvbuf;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  if (sndbuf) {
    size = (int)sndbuf;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  int on = 1; /* the kernel's receive timestamp on every datagram (residence timing); best effort */
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(addr);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return make_int(env, -e);
  }
  return make_int(env, fd);
}

/* udpLocalPort(fd) -> bound port | -errno (for port 0 in tests) */
static napi_value udp_local_port(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &fd)) return NULL;
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) return make_int(env, -errno);
  return make_int(env, ntohs(sa.sin_port));
}

/*
 * The n messages received into slots first..: lens, sender, UDP GRO segment size and arrival
 * stamp from each message's control data (now: CLOCK_MONOTONIC at the receive's return; fallback:
 * the stamp of a datagram without a kernel timestamp).
 */
static void udp_harvest_one(ring_t *r, uint32_t slot, const struct msghdr *h, uint32_t len,
                            const struct sockaddr_in *name, double now, double fallback, double *real_to_mono) {
  r->lens[slot] = (int32_t)len;
  r->addrs[slot] = ntohl(name->sin_addr.s_addr);
  r->ports[slot] = ntohs(name->sin_port);
  uint16_t seg = 0;
  double stamp = fallback;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR((struct msghdr *)h, cm)) {
    if (r->udp_gro && cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
      int v;
      memcpy(&v, CMSG_DATA(cm), sizeof v);
      if (v > 0 && v < 65536 && (uint32_t)v < len) seg = (uint16_t)v;
    } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
      struct timespec ts;
      memcpy(&ts, CMSG_DATA(cm), sizeof ts);
      if (*real_to_mono == 0) *real_to_mono = now - clock_us(CLOCK_REALTIME);
      stamp = (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3 + *real_to_mono;
      if (stamp > now) stamp = now; /* the wall clock stepped back meanwhile */
    }
  }
  r->seg_sizes[slot] = seg;
  r->stamps[slot] = stamp;
}

static void udp_harvest(ring_t *r, uint32_t first, uint32_t n, double now, double fallback) {
  double real_to_mono = 0;
  for (uint32_t i = 0; i < n; i++)
    udp_harvest_one(r, first + i, &r->msgs[i].msg_hdr, r->msgs[i].msg_len, &r->names[i], now, fallback, &real_to_mono);
}

/* udpRecv's recvmmsg into slots first..first+max-1 (a checked run): n, 0 (EAGAIN) or -errno. */
static int udp_recv_run(ring_t *r, int fd, uint32_t first, uint32_t max) {
  for (uint32_t i = 0; i < max; i++) {
    uint8_t *buf = slot_ptr(r, first + i, r->slot_caps[first + i]);
    if (!buf) return -EINVAL;
    r->iovs[i].iov_base = buf;
    r->iovs[i].iov_len = r->slot_caps[first + i];
    memset(&r->msgs[i].msg_hdr, 0, sizeof r->msgs[i].msg_hdr);
    r->msgs[i].msg_hdr.msg_iov = &r->iovs[i];
    r->msgs[i].msg_hdr.msg_iovlen = 1;
    r->msgs[i].msg_hdr.msg_name = &r->names[i];
    r->msgs[i].msg_hdr.msg_namelen = sizeof r->names[i];
    r->msgs[i].msg_hdr.msg_control = r->ctrl[i].buf;
    r->msgs[i].msg_hdr.msg_controllen = sizeof r->ctrl[i].buf;
  }
  double ready = ready_at_us;
  ready_at_us = 0;
  int n;
  do n = recvmmsg(fd, r->msgs, max, MSG_DONTWAIT | MSG_TRUNC, NULL);
  while (n < 0 && errno == EINTR);
  double now = mono_us();
  r->io_clock[0] = now;
  if (n < 0) return errno == EAGAIN ? 0 : -errno;
  udp_harvest(r, first, (uint32_t)n, now, ready > 0 ? ready : now);
  return n;
}

/*
 * udpRecv(ring, fd, first, max) -> n | -errno   (EAGAIN -> 0)
 * One recvmmsg into slots first.. (each takes at most slotCaps[slot] bytes); lens[slot] = the
 * datagram's real length (MSG_TRUNC: may exceed the cap, in which case the slot holds only the
 * cap and JS must drop it); addrs/ports[slot] = the sender; segSizes[slot] = with UDP GRO on
 * (udpEnableGro), the size of each coalesced datagram when the kernel handed over several
 * equal-size datagrams of one sender as one (the last may be shorter), else 0.
 */
static napi_value udp_recv(napi_env env, napi_callback_info info) {
  int32_t fd;
  uint32_t first, max;
  int bad_run = 0;
  ring_t *r = get_run_args(env, info, &fd, &first, &max, &bad_run);
  if (!r) return bad_run ? make_int(env, -EINVAL) : NULL;
  return make_int(env, udp_recv_run(r, fd, first, max));
}

/* udpEnableGro(ring, fd) -> 0 | -errno: UDP_GRO on the socket (kernel >= 5.0), and udpRecv
   reports each coalesced receive's segment size. The ring's receive slots must then hold 64 KiB. */
static napi_value udp_enable_gro(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &fd)) return NULL;
  int on = 1;
  if (setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0) return make_int(env, -errno);
  r->udp_gro = 1;
  return make_int(env, 0);
}

/* Waits (bounded) for room in a full send buffer: the backpressure a TCP flow in the tunnel needs. */
/* Bounded at ~20 ms per call: the lane forwards for every peer, so one peer whose traffic the
   kernel cannot take may hold it only that long (then the datagrams are counted as send errors). */
#define SEND_WAITS 20
#define SEND_WAIT_MS 1

/*
 * Sends the datagrams of message g one sendmsg each (its iovecs, 1 or 2 per datagram, are
 * consecutive), waiting for room as udpSend does; a datagram that still fails gets
 * lens[slot] = -errno. Returns the datagrams sent.
 */
static uint32_t udp_send_singly(ring_t *r, int fd, uint32_t g) {
  struct msghdr *h = &r->msgs[g].msg_hdr;
  struct iovec *iov = h->msg_iov;
  uint32_t sent = 0;
  int waits = 0;
  for (uint32_t j = 0; j < r->msg_segs[g]; j++) {
    uint32_t slot = r->slot_of[r->msg_first[g] + j];
    struct msghdr one = {.msg_name = h->msg_name, .msg_namelen = h->msg_namelen, .msg_iov = iov};
    one.msg_iovlen = r->ext_lens[slot] ? 2 : 1;
    iov += one.msg_iovlen;
    for (;;) {
      if (sendmsg(fd, &one, 0) >= 0) {
        sent++;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN && waits < SEND_WAITS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, SEND_WAIT_MS);
        waits++;
        continue;
      }
      r->last_errno = errno;
      r->lens[slot] = -errno;
      break;
    }
  }
  return sent;
}

/*
 * udpSend(ring, fd, list: Uint16Array, count) -> datagrams sent
 * sendmmsg of slots list[0..count) to addrs/ports[slot]. A datagram is the slot's lens[slot]
 * bytes, followed, when extLens[slot] > 0, by extLens[slot] bytes at slab offset extOffs[slot]
 * (a TCP segment: its own header cell, then its payload inside the super-packet): no copy.
 * With UDP GSO on (ringSetGso), a run of consecutive datagrams to the same peer with the same
 * length (the last may be shorter) goes as ONE message of scattered iovecs with a UDP_SEGMENT
 * control message: the kernel cuts it into the same datagrams, so the wire does not change, but
 * the stack is crossed once per run. A GSO message the kernel refuses as such (a path MTU below
 * the segment size; a device without GSO, which also turns GSO off for the ring) is sent again
 * one datagram at a time. A datagram the kernel refuses is skipped and its lens[slot] set to
 * -errno; a full send buffer waits for POLLOUT (bounded), the backpressure a TCP flow inside
 * the tunnel needs instead of loss.
 */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint32_t count;
  void *p;
  size_t list_len;
  if (get_args(env, info, 4, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &fd) || typed_array(env, argv[2], napi_uint16_array, &p, &list_len) ||
      get_u32(env, argv[3], &count))
    return NULL;
  uint16_t *list = p;
  if (count > list_len) count = (uint32_t)list_len;
  if (count > MAX_BATCH) count = MAX_BATCH;
  uint32_t d = 0, k = 0, m = 0; /* datagrams, iovecs, messages */
  for (uint32_t i = 0; i < count; i++) {
    uint32_t slot = list[i];
    uint8_t *head = slot < r->slot_count && r->lens[slot] >= 0 ? slot_ptr(r, slot, (size_t)r->lens[slot]) : NULL;
    uint32_t ext_len = head ? r->ext_lens[slot] : 0, ext_off = head ? r->ext_offs[slot] : 0;
    if (!head || (ext_len && (ext_off > r->slab_len || ext_len > r->slab_len - ext_off))) {
      r->last_errno = EINVAL;
      if (slot < r->slot_count) r->lens[slot] = -EINVAL;
      continue;
    }
    uint32_t len = (uint32_t)r->lens[slot] + ext_len;
    int joined = 0;
    if (m > 0 && r->gso_segments > 1) {
      uint32_t g = m - 1, first = r->msg_first[g], segs = r->msg_segs[g];
      uint32_t seg = r->dgram_len[first], first_slot = r->slot_of[first];
      joined = r->addrs[slot] == r->addrs[first_slot] && r->ports[slot] == r->ports[first_slot] &&
               r->dgram_len[d - 1] == seg /* no shorter datagram has closed the run */ &&
               len <= seg && segs < r->gso_segments && (segs + 1) * seg <= GSO_MAX_BYTES;
      if (joined) {
        r->msg_segs[g]++;
      }
    }
    if (!joined) {
      struct sockaddr_in *sa = &r->names[m];
      memset(sa, 0, sizeof *sa);
      sa->sin_family = AF_INET;
      sa->sin_port = htons(r->ports[slot]);
      sa->sin_addr.s_addr = htonl(r->addrs[slot]);
      struct msghdr *h = &r->msgs[m].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_name = sa;
      h->msg_namelen = sizeof *sa;
      h->msg_iov = &r->iovs[k];
      r->msg_first[m] = (uint16_t)d;
      r->msg_segs[m] = 1;
      m++;
    }
    struct msghdr *h = &r->msgs[m - 1].msg_hdr;
    r->iovs[k].iov_base = head;
    r->iovs[k++].iov_len = (size_t)r->lens[slot];
    h->msg_iovlen++;
    if (ext_len) {
      r->iovs[k].iov_base = r->slab + ext_off;
      r->iovs[k++].iov_len = ext_len;
      h->msg_iovlen++;
    }
    r->slot_of[d] = (uint16_t)slot;
    r->dgram_len[d++] = len;
  }
  for (uint32_t g = 0; g < m; g++) {
    if (r->msg_segs[g] < 2) continue;
    struct msghdr *h = &r->msgs[g].msg_hdr;
    h->msg_control = r->ctrl[g].buf;
    h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *cm = CMSG_FIRSTHDR(h);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)r->dgram_len[r->msg_first[g]];
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  uint32_t done = 0, sent = 0;
  int waits = 0;
  while (done < m) {
    int n = sendmmsg(fd, r->msgs + done, m - done, 0);
    if (n > 0) {
      for (int j = 0; j < n; j++) sent += r->msg_segs[done + (uint32_t)j];
      done += (uint32_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN && waits < SEND_WAITS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      poll(&pfd, 1, SEND_WAIT_MS);
      waits++;
      continue;
    }
    int err = n < 0 ? errno : EIO;
    if (r->msg_segs[done] > 1 && (err == EMSGSIZE || err == EINVAL || err == EIO || err == EOPNOTSUPP)) {
      /* The kernel refused the GSO message as such: a segment larger than the route's or path's
         MTU (EMSGSIZE; EINVAL before Linux 6.15), or a device that cannot do GSO (EIO,
         EOPNOTSUPP: then plain sends from now on). Its datagrams go one by one instead, as plain
         sendmsg would (fragmented if need be), so none is lost for it. */
      if (err == EIO || err == EOPNOTSUPP) r->gso_segments = 0;
      sent += udp_send_singly(r, fd, done);
    } else {
      /* Anything else (a firewall, no route) concerns the datagrams, not GSO. */
      r->last_errno = err;
      for (uint32_t j = 0; j < r->msg_segs[done]; j++) /* tell JS which datagrams were lost */
        r->lens[r->slot_of[r->msg_first[done] + j]] = -err;
    }
    done++; /* and skip them */
  }
  r->io_clock[0] = mono_us();
  return make_int(env, sent);
}

/* udpProbeGso(fd) -> 0 if the socket accepts UDP_SEGMENT (kernel >= 4.18), else -errno. */
static napi_value udp_probe_gso(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &fd)) return NULL;
  int off = 0; /* gso_size 0: no segmentation unless a message asks for it */
  return make_int(env, setsockopt(fd, SOL_UDP, UDP_SEGMENT, &off, sizeof off) < 0 ? -errno : 0);
}

/* ringSetGso(ring, maxSegments) -> the setting in force (0 = off; capped at 64). */
static napi_value ring_set_gso(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t segs;
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_u32(env, argv[1], &segs)) return NULL;
  r->gso_segments = segs > GSO_MAX_SEGMENTS ? GSO_MAX_SEGMENTS : segs;
  return make_int(env, r->gso_segments);
}

/* ringGso(ring) -> the GSO setting in force (0 after the kernel refused a GSO message). */
static napi_value ring_gso(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  return make_int(env, r->gso_segments);
}

/* lastErrno(ring) -> errno of the last packet a batch call skipped, then resets it to 0. */
static napi_value last_errno(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  int e = r->last_errno;
  r->last_errno = 0;
  return make_int(env, e);
}

/* closeFd(fd) -> 0 | -errno */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &fd)) return NULL;
  return make_int(env, close(fd) < 0 ? -errno : 0);
}

/* strerror(errno) -> message */
static napi_value str_error(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t e;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &e)) return NULL;
  napi_value s;
  napi_create_string_utf8(env, strerror(e < 0 ? -e : e), NAPI_AUTO_LENGTH, &s);
  return s;
}

/* ---------------------------------------------------------------- busy-polling */

/*
 * After traffic, the answer to what was just forwarded may come soon: busy-polling for a while
 * before sleeping spares a wake-up (on a virtual machine, waking a halted vCPU costs tens of µs,
 * several times per round trip). Only where it costs no one: not when more tasks want to run than
 * there are CPUs; between polls the thread yields, so any runnable task goes first; and a yield
 * that kept the thread off the CPU long means the CPU is contended: the polling stops and backs off.
 * And only while it pays: after spins in a row that caught nothing (the answers take longer than a
 * spin), it pauses, polling on one wait in 16 to learn when they come sooner again.
 * Used by the wait in io_uring (waitNext) and by the event loop's engine (spinPoll).
 */
/* A sched_yield that kept this thread off the CPU longer than this: another task ran in between,
   so the CPU is contended (a short task, such as a pod answering, takes a few tens of µs). */
#define SPIN_YIELD_BUSY_US 500.0
/* After contention, no busy-polling for this long, doubled each time it is seen again (up to the
   max), halved back after a spin that saw none: every yield to a CPU-bound task can cost that
   task's whole time slice, so on a busy machine the thread sleeps and is woken instead. */
#define SPIN_OFF_MIN_US 10000.0
#define SPIN_OFF_MAX_US 1000000.0
#define SPIN_MAX_US 10000u
/* Spins in a row that ran out (caught nothing) before busy-polling pauses: the traffic's gaps are
   longer than a spin (a request every few ms, say), and polling would only take CPU time. Counted
   apart for spins after forwarding flannel0 -> UDP and after UDP -> flannel0 (SPIN_AFTER_TX/RX):
   request and response make one pay and not the other (the agent that sent a pod's request catches
   the answer; after handing the answer to the pod, the next request comes when the pod sends it). */
#define SPIN_MISSES_TO_PAUSE 4u
/* While paused, one wait in this many polls anyway, to learn whether the gaps got short again. */
#define SPIN_PAUSED_PROBE_EVERY 16u
#define SPIN_AFTER_TX 0u
#define SPIN_AFTER_RX 1u

struct spinner {
  uint32_t spin_us;   /* how long one spin polls at most */
  int loadavg_fd;     /* /proc/loadavg (its runnable-task count), or -1: then only yields tell */
  long cpus;          /* online CPUs */
  double off_until_us; /* no busy-polling before this (contention was seen) */
  double load_read_us; /* when /proc/loadavg last said "not contended" (0: to be read again) */
  double off_us;       /* the next back-off after contention (0: SPIN_OFF_MIN_US) */
  uint32_t misses[2];  /* spins in a row that ran out, by SPIN_AFTER_* */
  uint32_t paused_waits[2]; /* waits while paused (every SPIN_PAUSED_PROBE_EVERY-th polls) */
  /* spinCounts: caught a packet, ran out, met contention, did not poll because spins had not paid */
  double hits, sleeps, backoffs, paused;
};

static struct spinner *spinner_new(uint32_t spin_us) {
  struct spinner *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->spin_us = spin_us > SPIN_MAX_US ? SPIN_MAX_US : spin_us;
  s->loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  s->cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return s;
}

static void spinner_free(struct spinner *s) {
  if (!s) return;
  if (s->loadavg_fd >= 0) close(s->loadavg_fd);
  free(s);
}

/* A "not contended" from /proc/loadavg holds this long. Its read costs 1-2 µs warm but ~10 µs
   after the thread slept a few ms (measured here), and it came at the start of every spin, on the
   round trip: read each time, it made busy-polling cost more than it saved at 200 round trips/s.
   Contention that starts meanwhile shows in the first yield that keeps the thread off the CPU. */
#define SPIN_LOAD_FRESH_US 50000.0

/* More tasks want to run than there are CPUs (this thread included): busy-polling would take a
   CPU from one of them. From /proc/loadavg's 4th field ("running/total"), read again only when
   the last "no" is older than SPIN_LOAD_FRESH_US (a "yes" is read again each time); unknown (no
   /proc) counts as not contended, and the yields still tell. */
static int more_runnable_than_cpus(struct spinner *s, double now) {
  if (s->loadavg_fd < 0 || s->cpus < 1) return 0;
  if (s->load_read_us > 0 && now - s->load_read_us < SPIN_LOAD_FRESH_US) return 0;
  char buf[128];
  ssize_t n = pread(s->loadavg_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = buf;
  for (int field = 0; field < 3 && p; field++) {
    p = strchr(p, ' ');
    if (p) p++;
  }
  int contended = p && strtol(p, NULL, 10) > s->cpus;
  s->load_read_us = contended ? 0 : now;
  return contended;
}

/* For a caller whose own check just found nothing, after forwarding the way `way` says
   (SPIN_AFTER_*): yields, then calls check(ctx) (> 0: input is ready, 0: none, < 0: -errno), until
   it finds input, for at most spin_us; returns what check returned last, or 0 (sleep now), at once
   while backed off, paused or contended. */
static int spinner_run(struct spinner *s, unsigned way, int (*check)(void *), void *ctx) {
  double now = mono_us();
  if (now < s->off_until_us) return 0;
  way = way == SPIN_AFTER_RX ? SPIN_AFTER_RX : SPIN_AFTER_TX;
  if (s->misses[way] >= SPIN_MISSES_TO_PAUSE && ++s->paused_waits[way] % SPIN_PAUSED_PROBE_EVERY != 0) {
    s->paused++;
    return 0;
  }
  if (more_runnable_than_cpus(s, now)) {
    s->backoffs++;
    return 0;
  }
  for (double until = now + s->spin_us, before = now; before < until; before = mono_us()) {
    sched_yield();
    double after = mono_us();
    if (after - before > SPIN_YIELD_BUSY_US) {
      s->off_us = s->off_us < SPIN_OFF_MIN_US       ? SPIN_OFF_MIN_US
                  : s->off_us * 2 > SPIN_OFF_MAX_US ? SPIN_OFF_MAX_US
                                                    : s->off_us * 2;
      s->off_until_us = after + s->off_us;
      s->load_read_us = 0; /* contended now: the next spin reads the load again */
      s->backoffs++;
      return 0;
    }
    int rc = check(ctx);
    if (rc != 0) {
      if (rc > 0) {
        s->hits++;
        s->misses[way] = 0;
        s->paused_waits[way] = 0;
      }
      return rc;
    }
  }
  s->off_us /= 2; /* a whole spin without contention: back-offs shrink again */
  s->sleeps++;
  if (s->misses[way] < SPIN_MISSES_TO_PAUSE) s->misses[way]++;
  return 0;
}

/* ---------------------------------------------------------------- waiting in io_uring */

/*
 * A lane that forwards from a thread of its own (src/datapath/lane-worker.ts) waits here, in an
 * io_uring of its own that keeps a poll armed on flannel0, on the UDP socket and on an eventfd
 * (the control plane's doorbell). The polls are multishot (Linux 5.13; one-shot polls armed again
 * after each completion before that): armed once, they stay, so a wait costs one io_uring_enter
 * and sets nothing up again per packet, like the poll() of flanneld's proxy. (The design before
 * kept a read posted on each fd instead: posting it again after every packet cost ~7 µs of kernel
 * time, four times per round trip; see docs/latency.md.)
 * Readiness is kept level-triggered here: a poll's completion marks its fd ready, and only a read
 * that finds the fd empty clears it (EAGAIN, or a socket read that took less than udp_max; also a
 * flannel0 read that fails), since one completion may stand for several packets.
 * waitNext reads each wanted, ready fd and reports which (W_*): one packet from flannel0 into
 * tun_slot; from the socket, one recvmmsg into udp_slot.. (up to udp_max datagrams, so a read
 * that takes fewer than that found the socket empty, with no read more to learn it). They are
 * as tunRead/udpRecv leave them: lens, stamps (the read time for flannel0, the kernel timestamp
 * for a datagram) and, for a datagram, sender and GRO size.
 * Nothing reads into the slab in the background: closing the io_uring is all waitClose needs.
 */
#define W_TUN 1u
#define W_UDP 2u
#define W_WAKE 4u
/* The read found a packet on an fd that was ready before this waitNext, no poll completion having
   made it ready since: traffic was queued behind the last packet (JS then drains). A packet whose
   fd turned ready meanwhile is not marked: the answer to a packet just written comes that way,
   alone, and a drain would only find nothing. */
#define W_TUN_AT_ONCE 8u
/* The same for the socket, or a read of it that took more than one datagram. */
#define W_UDP_AT_ONCE 16u
/* waitOpen's polls (tests): as this kernel allows, one-shot, multishot asked with a flag refused. */
#define WAIT_POLLS_MULTISHOT 0u
#define WAIT_POLLS_ONE_SHOT 1u
#define WAIT_POLLS_REFUSED 2u
/* waitNext's result: the datagrams read (with W_UDP) are the bits from here up. */
#define W_UDP_COUNT_SHIFT 8
/* Busy-polling (spin_us) only this soon after the last packet: an idle lane sleeps at once. */
#define W_SPIN_AFTER_US 2000.0

struct waiter {
  uring_t *u;
  int tun_fd, udp_fd, wake_fd;
  uint32_t tun_slot, udp_slot, udp_max;
  unsigned udp_count;  /* datagrams the last read of the socket took */
  unsigned armed;      /* W_TUN | W_UDP | W_WAKE: polls in force */
  unsigned ready;      /* W_TUN | W_UDP: a poll said readable, and no read found the fd empty since */
  unsigned fresh;      /* of ready: made ready by a completion since the last read of that fd */
  unsigned want;       /* what this waitNext reads (W_TUN | W_UDP) */
  unsigned multishot;  /* IORING_POLL_ADD_MULTI while the kernel takes it (0: one-shot polls) */
  double last_data_us; /* when the last packet came (CLOCK_MONOTONIC µs) */
  unsigned last_after; /* SPIN_AFTER_* of the last wait that brought packets (JS forwards rx last) */
  unsigned pending;    /* SQEs written but not yet submitted */
};

/* Arms a poll (POLLIN) on each fd of `which` that has none in force; submitted by the next enter. */
static void waiter_arm(struct waiter *w, unsigned which) {
  static const unsigned bits[3] = {W_TUN, W_UDP, W_WAKE};
  const int fds[3] = {w->tun_fd, w->udp_fd, w->wake_fd};
  uring_t *u = w->u;
  for (int i = 0; i < 3; i++) {
    if (!(which & bits[i]) || (w->armed & bits[i])) continue;
    struct io_uring_sqe *sqe = &u->sqes[(*u->sq_tail + w->pending) & *u->sq_mask];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fds[i];
    sqe->user_data = bits[i];
    sqe->poll32_events = POLLIN;
    sqe->len = w->multishot;
    w->pending++;
    w->armed |= bits[i];
  }
}

/* io_uring_enter submitting the pending SQEs, waiting for `wait` completions at most timeout_ms. */
static int waiter_enter(struct waiter *w, unsigned wait, int timeout_ms) {
  struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.ts = (uint64_t)(uintptr_t)&ts;
  unsigned submit = w->pending;
  if (submit) __atomic_store_n(w->u->sq_tail, *w->u->sq_tail + submit, __ATOMIC_RELEASE);
  w->pending = 0;
  unsigned flags = IORING_ENTER_GETEVENTS | (wait ? IORING_ENTER_EXT_ARG : 0);
  long ret = syscall(__NR_io_uring_enter, w->u->fd, submit, wait, flags, wait ? &arg : NULL, wait ? sizeof arg : 0);
  /* ETIME: the time ran out; EINTR: a signal; EBUSY: the CQ is full (reaped next). The caller
     reaps what there is and comes back. */
  if (ret < 0 && errno != ETIME && errno != EINTR && errno != EBUSY) return -errno;
  return 0;
}

/* Takes every completion posted: marks fds ready, empties the doorbell. W_WAKE if it rang. */
static unsigned waiter_reap(struct waiter *w) {
  uring_t *u = w->u;
  unsigned ev = 0;
  unsigned head = *u->cq_head, ctail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
  for (; head != ctail; head++) {
    const struct io_uring_cqe *cqe = &u->cqes[head & *u->cq_mask];
    unsigned what = (unsigned)cqe->user_data & (W_TUN | W_UDP | W_WAKE);
    if (!(cqe->flags & IORING_CQE_F_MORE)) w->armed &= ~what; /* armed again by the next waitNext */
    /* A kernel before 5.13 refuses multishot (EINVAL): one-shot polls from now on. Any failed poll
       lets the fd's read tell what is wrong (an error in lens, as tunRead/udpRecv report it). */
    if (cqe->res == -EINVAL && w->multishot) w->multishot = 0;
    if (what == W_WAKE) {
      uint64_t v;
      ssize_t got;
      while ((got = read(w->wake_fd, &v, sizeof v)) < 0 && errno == EINTR) {
      }
      if (got == sizeof v) ev |= W_WAKE; /* else rung before and emptied already (non-blocking) */
    } else if (!(w->ready & what)) {
      w->ready |= what;
      w->fresh |= what;
    }
  }
  __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
  return ev;
}

/* One read of flannel0 into tun_slot: 1 = a packet (or an error, in lens), 0 = none (EAGAIN). */
static int waiter_read_tun(ring_t *r, struct waiter *w, double now) {
  int rc = tun_read_one(r, w->tun_fd, w->tun_slot);
  if (rc == 0) return 0;
  if (rc < 0) {
    r->last_errno = -rc;
    r->lens[w->tun_slot] = rc;
  }
  r->stamps[w->tun_slot] = now;
  return 1;
}

/* One recvmmsg of the socket into udp_slot..: 1 = datagrams (udp_count; or an error, in lens),
   0 = none. None or fewer than udp_max: the socket is empty now (*drained). io_clock[0] is the
   read's return (udp_recv_run sets it). */
static int waiter_read_udp(ring_t *r, struct waiter *w, int *drained) {
  int n = udp_recv_run(r, w->udp_fd, w->udp_slot, w->udp_max);
  *drained = n >= 0 && n < (int)w->udp_max; /* an error (sk_err) may have datagrams behind it */
  if (n == 0) return 0;
  if (n < 0) {
    r->last_errno = -n;
    r->lens[w->udp_slot] = n;
    r->stamps[w->udp_slot] = r->io_clock[0];
    n = 1;
  }
  w->udp_count = (unsigned)n;
  return 1;
}

/* Reads the wanted, ready fds (flannel0 first): W_* bits of what came, with *_AT_ONCE for a read
   whose fd was ready before (traffic queued). A read that finds the fd empty (or flannel0
   failing) clears its ready. */
static unsigned waiter_read(ring_t *r) {
  struct waiter *w = r->waiter;
  unsigned todo = w->ready & w->want, ev = 0;
  if (!todo) return 0;
  double now = 0;
  if (todo & W_TUN) {
    now = mono_us(); /* the packet's arrival: flannel0 has no timestamps */
    int got = waiter_read_tun(r, w, now);
    if (got) ev |= W_TUN | ((w->fresh & W_TUN) ? 0 : W_TUN_AT_ONCE);
    /* Empty, or an error: a TUN's (a detached device, EBADFD) would come back on every read, so
       the next read waits for the poll's next completion instead of failing in a loop. */
    if (!got || r->lens[w->tun_slot] < 0) w->ready &= ~W_TUN;
  }
  if (todo & W_UDP) {
    int drained = 0;
    if (waiter_read_udp(r, w, &drained))
      ev |= W_UDP | ((w->fresh & W_UDP) && w->udp_count == 1 ? 0 : W_UDP_AT_ONCE);
    if (drained) w->ready &= ~W_UDP;
    now = r->io_clock[0]; /* the socket read's return */
  }
  w->fresh &= ~todo;
  if (ev) {
    /* The reads' return, for JS (a socket read set it itself, later than flannel0's stamp). */
    r->io_clock[0] = w->last_data_us = now;
    w->last_after = (ev & W_UDP) ? SPIN_AFTER_RX : SPIN_AFTER_TX;
  }
  return ev;
}

/* Submits what is pending and posts the completions that wait for it (IORING_SQ_TASKRUN), then
   reaps: a syscall only when either is needed. W_WAKE, or -errno. */
static int waiter_collect(struct waiter *w) {
  if (w->pending || (__atomic_load_n(w->u->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN)) {
    int rc = waiter_enter(w, 0, 0);
    if (rc < 0) return rc;
  }
  return (int)waiter_reap(w);
}

static void waiter_free(ring_t *r) {
  struct waiter *w = r->waiter;
  if (!w) return;
  uring_free(w->u); /* closing it ends the polls; none holds a pointer into the slab */
  free(w);
  r->waiter = NULL;
}

/*
 * waitOpen(ring, tunFd, udpFd, wakeFd, tunSlot, udpSlot, udpMax, spinUs[, polls]) -> 0 | -errno:
 * sets up the wait (an io_uring on the calling thread, which alone may call waitNext); a read of
 * the socket takes up to udpMax datagrams into udpSlot..; spinUs: how long a wait busy-polls
 * before it sleeps, when a packet came in the last 2 ms (0: never, capped at 10 ms); polls
 * (tests, WAIT_POLLS_*): one-shot polls as on kernels before 5.13, or multishot ones asked with a
 * flag the kernel refuses, as those kernels refuse IORING_POLL_ADD_MULTI (then the wait goes on
 * with one-shot polls). ENOSYS/EPERM: no io_uring here; EOPNOTSUPP: a kernel without timed waits
 * (IORING_FEAT_EXT_ARG, Linux 5.11).
 */
static napi_value wait_open(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  size_t argc = 9;
  int32_t tun_fd, udp_fd, wake_fd;
  uint32_t tun_slot, udp_slot, udp_max, spin_us;
  uint32_t polls = WAIT_POLLS_MULTISHOT;
  if (get_args(env, info, 8, argv)) return NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &tun_fd) || get_i32(env, argv[2], &udp_fd) || get_i32(env, argv[3], &wake_fd) ||
      get_u32(env, argv[4], &tun_slot) || get_u32(env, argv[5], &udp_slot) || get_u32(env, argv[6], &udp_max) ||
      get_u32(env, argv[7], &spin_us))
    return NULL;
  if (argc >= 9 && get_u32(env, argv[8], &polls)) return NULL;
  if (r->waiter) return make_int(env, -EBUSY);
  if (tun_slot >= r->slot_count || udp_max == 0 || check_run(r, udp_slot, &udp_max)) return make_int(env, -EINVAL);
  struct waiter *w = calloc(1, sizeof *w);
  if (!w) return make_int(env, -ENOMEM);
  /* TASKRUN_FLAG: a completion waiting to be posted shows in the SQ ring's flags, so a look
     without a syscall can tell whether there is any (with DEFER_TASKRUN, only io_uring_enter
     posts them; without it, they are posted as this thread returns from any syscall). */
  w->u = uring_new(8, IORING_SETUP_TASKRUN_FLAG);
  if (!w->u) {
    int e = errno;
    free(w);
    return make_int(env, -e);
  }
  if (!(w->u->features & IORING_FEAT_EXT_ARG)) {
    uring_free(w->u);
    free(w);
    return make_int(env, -EOPNOTSUPP);
  }
  w->tun_fd = tun_fd;
  w->udp_fd = udp_fd;
  w->wake_fd = wake_fd;
  w->tun_slot = tun_slot;
  w->udp_slot = udp_slot;
  w->udp_max = udp_max;
  w->multishot = polls == WAIT_POLLS_ONE_SHOT ? 0 : polls == WAIT_POLLS_REFUSED ? 1u << 31 : IORING_POLL_ADD_MULTI;
  r->waiter = w;
  if (spin_us > 0 && !r->spinner) r->spinner = spinner_new(spin_us);
  return make_int(env, 0);
}

/* waiter_spin's check: what came, without waiting (W_* bits), or -errno. */
static int waiter_check(void *ctx) {
  ring_t *r = ctx;
  int ev = waiter_collect(r->waiter);
  return ev < 0 ? ev : (int)((unsigned)ev | waiter_read(r));
}

/* Busy-polls (spinner_run) while a packet came in the last W_SPIN_AFTER_US: W_* bits, 0, -errno. */
static int waiter_spin(ring_t *r) {
  if (!r->spinner || mono_us() - r->waiter->last_data_us >= W_SPIN_AFTER_US) return 0;
  return spinner_run(r->spinner, r->waiter->last_after, waiter_check, r);
}

/*
 * waitNext(ring, timeoutMs, want) -> W_* bits (and with W_UDP, the datagrams read
 * << W_UDP_COUNT_SHIFT) | -errno. Reads the fds of `want` (W_TUN | W_UDP) that are ready and
 * returns what came: at once (with *_AT_ONCE where traffic was queued), or after busy-polling, or
 * after waiting at most timeoutMs (0 bits: the time ran out, a signal came, or a poll fired for
 * nothing to read). An fd not wanted keeps its poll and is not read: what comes for it stays in it.
 */
static napi_value wait_next(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t timeout_ms;
  uint32_t want;
  if (get_args(env, info, 3, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &timeout_ms) || get_u32(env, argv[2], &want)) return NULL;
  struct waiter *w = r->waiter;
  if (!w) return make_int(env, -EINVAL);
  if (timeout_ms < 0) timeout_ms = 0;
  w->want = want & (W_TUN | W_UDP);
  waiter_arm(w, W_WAKE | w->want);
  int rc = waiter_collect(w);
  if (rc < 0) return make_int(env, rc);
  unsigned ev = (unsigned)rc | waiter_read(r);
  if (!ev) {
    rc = waiter_spin(r);
    if (rc < 0) return make_int(env, rc);
    ev = (unsigned)rc;
  }
  if (!ev) {
    /* A poll that ended meanwhile (one-shot, or a multishot one the kernel refused or ended) is
       armed again by the enter that waits: a wait never sleeps without it. */
    waiter_arm(w, W_WAKE | w->want);
    rc = waiter_enter(w, 1, timeout_ms);
    if (rc < 0) return make_int(env, rc);
    ev = waiter_reap(w);
    ev |= waiter_read(r);
  }
  if (ev & W_UDP) ev |= w->udp_count << W_UDP_COUNT_SHIFT;
  return make_int(env, ev);
}

/* waitClose(ring): closes the wait's io_uring (its polls end with it). Idempotent. */
static napi_value wait_close(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  waiter_free(r);
  return NULL;
}

/* spinCounts(ring) -> [hits, sleeps, backoffs, paused] | null (no busy-polling on this ring): what
   the busy-polling did (spinner_run): spins that caught a packet, ran out and slept, met
   contention; waits that did not poll because the last spins had caught nothing. */
static napi_value spin_counts(napi_env env, napi_callback_info info) {
  ring_t *r = only_ring_arg(env, info);
  if (!r) return NULL;
  napi_value arr;
  if (!r->spinner) {
    CHECK(napi_get_null(env, &arr));
    return arr;
  }
  const struct spinner *sp = r->spinner;
  const double counts[4] = {sp->hits, sp->sleeps, sp->backoffs, sp->paused};
  CHECK(napi_create_array_with_length(env, 4, &arr));
  for (uint32_t i = 0; i < 4; i++) {
    napi_value v;
    CHECK(napi_create_double(env, counts[i], &v));
    CHECK(napi_set_element(env, arr, i, v));
  }
  return arr;
}

/* ringSetSpin(ring, spinUs) -> 0 | -ENOMEM: busy-polling of up to spinUs (capped at 10 ms) for
   spinPoll (0: off). A wait in io_uring opened later keeps it. */
static napi_value ring_set_spin(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t spin_us;
  if (get_args(env, info, 2, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_u32(env, argv[1], &spin_us)) return NULL;
  spinner_free(r->spinner);
  r->spinner = spin_us > 0 ? spinner_new(spin_us) : NULL;
  return make_int(env, spin_us > 0 && !r->spinner ? -ENOMEM : 0);
}

struct poll_pair {
  struct pollfd fds[2];
  nfds_t n;
};

/* spin_poll's check: 1 = the first fd is readable, 2 = the second, or -errno. */
static int poll_check(void *ctx) {
  struct poll_pair *pp = ctx;
  int rc = poll(pp->fds, pp->n, 0);
  if (rc < 0) return errno == EINTR ? 0 : -errno;
  int bits = 0;
  for (nfds_t i = 0; i < pp->n; i++)
    if (pp->fds[i].revents) bits |= 1 << i;
  return bits;
}

/*
 * spinPoll(ring, fdA, fdB, after) -> bits | -errno: busy-polls (ringSetSpin) until fdA (bit 1) or
 * fdB (bit 2; -1: none) is readable, or the spin runs out, meets contention or is paused (0). For
 * an event-loop thread right after it forwarded (after: 0 = flannel0 -> UDP, 1 = UDP -> flannel0):
 * it then forwards what is ready without a wake-up. 0 at once when the ring has no busy-polling.
 */
static napi_value spin_poll(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd_a, fd_b;
  uint32_t after;
  if (get_args(env, info, 4, argv)) return NULL;
  ring_t *r = get_ring(env, argv[0]);
  if (!r || get_i32(env, argv[1], &fd_a) || get_i32(env, argv[2], &fd_b) || get_u32(env, argv[3], &after))
    return NULL;
  if (!r->spinner) return make_int(env, 0);
  struct poll_pair pp = {.fds = {{.fd = fd_a, .events = POLLIN}, {.fd = fd_b, .events = POLLIN}},
                         .n = fd_b >= 0 ? 2 : 1};
  int rc = poll_check(&pp); /* what came while the caller forwarded */
  if (rc > 0) r->spinner->hits++;
  return make_int(env, rc != 0 ? rc : spinner_run(r->spinner, after, poll_check, &pp));
}

/* datagramPair() -> [fd, fd] | -errno: an AF_UNIX datagram socket pair (non-blocking): a stand-in
   for flannel0 (one datagram per read) when the datapath warms up. */
static napi_value datagram_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) return make_int(env, -errno);
  napi_value arr;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_set_element(env, arr, 0, make_int(env, fds[0])));
  CHECK(napi_set_element(env, arr, 1, make_int(env, fds[1])));
  return arr;
}

/* eventfdOpen() -> fd | -errno (non-blocking): a lane's doorbell. */
static napi_value eventfd_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return make_int(env, fd < 0 ? -errno : fd);
}

/* eventfdSignal(fd) -> 0 | -errno: rings the doorbell (wakes a waitNext waiting on it). */
static napi_value eventfd_signal(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv) || get_i32(env, argv[0], &fd)) return NULL;
  uint64_t one = 1;
  ssize_t n;
  do n = write(fd, &one, sizeof one);
  while (n < 0 && errno == EINTR);
  return make_int(env, n < 0 && errno != EAGAIN ? -errno : 0); /* EAGAIN: already rung to the brim */
}

/* ---------------------------------------------------------------- scheduling */

/* struct sched_attr of sched_setattr(2) (not in every libc's headers). */
struct lane_sched_attr {
  uint32_t size, sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
  uint32_t sched_util_min, sched_util_max;
};

/*
 * threadSetSlice(sliceUs) -> 0 | -errno: asks the scheduler for a time slice of sliceUs for the
 * calling thread (SCHED_OTHER, its nice unchanged: sched_setattr's sched_runtime, used by EEVDF
 * since Linux 6.12, clamped to 100 µs..100 ms). A thread with a slice shorter than the running
 * task's preempts it when it wakes up (PREEMPT_SHORT), instead of waiting for that task's slice to
 * end: the forwarding thread's wake-ups stop queueing behind CPU-bound work, and its share of the
 * CPU does not change. 0 = the default slice again. Older kernels accept and ignore it.
 */
static napi_value thread_set_slice(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t slice_us;
  if (get_args(env, info, 1, argv) || get_u32(env, argv[0], &slice_us)) return NULL;
  struct lane_sched_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.size = sizeof attr;
  attr.sched_policy = 0; /* SCHED_OTHER */
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  attr.sched_nice = errno == 0 ? nice : 0;
  attr.sched_runtime = (uint64_t)slice_us * 1000;
  return make_int(env, syscall(SYS_sched_setattr, 0, &attr, 0) < 0 ? -errno : 0);
}

/* ---------------------------------------------------------------- readiness */

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int closing;
} watcher_t;

static void watcher_closed(uv_handle_t *h) {
  watcher_t *w = h->data;
  free(w);
}

static void watcher_cb(uv_poll_t *h, int status, int events) {
  watcher_t *w = h->data;
  if (w->closing) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], result;
  napi_get_reference_value(env, w->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object receiver */
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  ready_at_us = mono_us(); /* the arrival stamp of what the callback reads from flannel0 */
  /* make_callback runs the microtask queue and reports uncaught exceptions like any callback */
  if (napi_make_callback(env, w->async, recv, cb, 2, argv, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  ready_at_us = 0;
  napi_close_handle_scope(env, scope);
}

/* The environment is going away (a worker thread ends, or is terminated, with this watcher still
   polling): the handle must be closed before its loop is, or Node aborts. The reference and async
   context go with the environment. */
static void watcher_env_cleanup(void *arg) {
  watcher_t *w = arg;
  if (!w->closing) {
    w->closing = 1;
    uv_poll_stop(&w->handle);
    uv_close((uv_handle_t *)&w->handle, watcher_closed);
  }
}

static void watcher_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  watcher_t *w = data;
  if (!w->closing) {
    napi_remove_env_cleanup_hook(env, watcher_env_cleanup, w);
    w->closing = 1;
    napi_delete_reference(env, w->callback);
    napi_async_destroy(env, w->async);
    uv_close((uv_handle_t *)&w->handle, watcher_closed);
  }
}

/* pollStart(fd, writable: boolean, callback(status, events)) -> watcher. Level-triggered. */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  bool writable;
  if (get_args(env, info, 3, argv) || get_i32(env, argv[0], &fd)) return NULL;
  CHECK(napi_get_value_bool(env, argv[1], &writable));
  struct uv_loop_s *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "flannel-ts shim: out of memory");
    return NULL;
  }
  w->env = env;
  int rc = uv_poll_init(loop, &w->handle, fd);
  if (rc < 0) {
    free(w);
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  w->handle.data = w;
  napi_value name;
  napi_create_string_utf8(env, "flannel-ts:poll", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[2], 1, &w->callback);
  napi_async_init(env, NULL, name, &w->async);
  napi_add_env_cleanup_hook(env, watcher_env_cleanup, w);
  rc = uv_poll_start(&w->handle, writable ? UV_WRITABLE : UV_READABLE, watcher_cb);
  if (rc < 0) {
    watcher_finalize(env, w, NULL);
    napi_throw_error(env, NULL, uv_strerror(rc));
    return NULL;
  }
  napi_value ext;
  if (napi_create_external(env, w, NULL, NULL, &ext) != napi_ok) {
    uv_poll_stop(&w->handle);
    watcher_finalize(env, w, NULL);
    napi_throw_error(env, NULL, "flannel-ts shim: cannot create the poll handle");
    return NULL;
  }
  return ext;
}

/* pollStop(watcher): stops and frees it. Call once: the JS wrapper (src/native) guarantees it. */
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  void *p;
  CHECK(napi_get_value_external(env, argv[0], &p));
  watcher_t *w = p;
  uv_poll_stop(&w->handle);
  watcher_finalize(env, w, NULL);
  return NULL;
}

/* ---------------------------------------------------------------- module */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"createRing", NULL, create_ring, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openTun", NULL, open_tun, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringSetTunVnet", NULL, ring_set_tun_vnet, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunSetOffload", NULL, tun_set_offload, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunName", NULL, tun_name, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunRead", NULL, tun_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tunWrite", NULL, tun_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringEnableUring", NULL, ring_enable_uring, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringDisableUring", NULL, ring_disable_uring, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringUring", NULL, ring_uring, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpLocalPort", NULL, udp_local_port, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpRecv", NULL, udp_recv, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSend", NULL, udp_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpEnableGro", NULL, udp_enable_gro, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpProbeGso", NULL, udp_probe_gso, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringSetGso", NULL, ring_set_gso, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringGso", NULL, ring_gso, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lastErrno", NULL, last_errno, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"strerror", NULL, str_error, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollStart", NULL, poll_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pollStop", NULL, poll_stop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitOpen", NULL, wait_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"threadSetSlice", NULL, thread_set_slice, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitNext", NULL, wait_next, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitClose", NULL, wait_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spinCounts", NULL, spin_counts, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ringSetSpin", NULL, ring_set_spin, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spinPoll", NULL, spin_poll, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfdOpen", NULL, eventfd_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"datagramPair", NULL, datagram_pair, NULL, NULL, NULL, napi_enumerable, NULL},
      {"eventfdSignal", NULL, eventfd_signal, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
