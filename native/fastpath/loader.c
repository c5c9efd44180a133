// The fast path's loader: an optional Node-API addon (flannel_fastpath.node) linked with libbpf.
// It loads build/bpf/flannel_udp.bpf.o, writes the config, attaches the two TC programs (tcx links
// where the kernel has them, a clsact filter through netlink otherwise), updates the routes and
// peers maps, sums the per-CPU counters, and takes everything down again. No packet goes through
// here. Errors of load and attach are thrown with one line (libbpf's and the verifier's last
// words included); map updates return 0 or -errno. Typed by src/fastpath/native.ts.
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <node_api.h>

// tcx (Linux 6.6): not in the older uapi headers this may be built against.
#define FP_BPF_LINK_CREATE 28
#define FP_BPF_TCX_INGRESS 46
#define FP_BPF_TCX_EGRESS 47

// Our clsact filters (when tcx is missing): a fixed handle and priority, so that a crashed agent's
// filter is found and replaced, and nobody else's is touched (the program name is checked too).
#define FP_TC_HANDLE 0x8285
#define FP_TC_PRIORITY 0x8285

#define EGRESS_PROG "flannel_egress"
#define INGRESS_PROG "flannel_ingress"

struct fastpath_config {
  uint32_t public_ip, subnet, subnet_mask, tun_ifindex, ext_ifindex, mtu;
  uint16_t port, pad;
};

struct route_key {
  uint32_t prefixlen, addr;
};

enum attach_kind { ATTACH_NONE, ATTACH_TCX, ATTACH_TC };

struct fastpath {
  struct bpf_object *obj;
  int routes_fd, peers_fd, counters_fd;
  int egress_fd, ingress_fd;
  int tun_ifindex, ext_ifindex;
  enum attach_kind kind;
  int egress_link, ingress_link;  // tcx link fds, -1 when none
  int tc_egress, tc_ingress;      // 1 when our clsact filter is attached there
  unsigned counter_slots;
  int ncpus;
};

// ---- libbpf's messages, kept for the error text ------------------------------------------------

static char libbpf_log[4096];
static size_t libbpf_log_len;

static int keep_libbpf_message(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  int n = vsnprintf(line, sizeof line, fmt, args);
  if (n <= 0) return 0;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  // Keep the tail: the verifier's verdict comes last.
  if (libbpf_log_len + n >= sizeof libbpf_log) {
    size_t drop = libbpf_log_len + n - sizeof libbpf_log + 1;
    if (drop > libbpf_log_len) drop = libbpf_log_len;
    memmove(libbpf_log, libbpf_log + drop, libbpf_log_len - drop);
    libbpf_log_len -= drop;
  }
  memcpy(libbpf_log + libbpf_log_len, line, n);
  libbpf_log_len += n;
  libbpf_log[libbpf_log_len] = 0;
  return 0;
}

/** The last non-empty line libbpf printed, for a one-line error. */
static const char *last_libbpf_line(char *out, size_t cap) {
  out[0] = 0;
  const char *end = libbpf_log + libbpf_log_len;
  while (end > libbpf_log && (end[-1] == '\n' || end[-1] == ' ')) end--;
  const char *start = end;
  while (start > libbpf_log && start[-1] != '\n') start--;
  size_t n = (size_t)(end - start);
  if (n >= cap) n = cap - 1;
  memcpy(out, start, n);
  out[n] = 0;
  return out;
}

// ---- Node-API helpers ---------------------------------------------------------------------------

#define CHECK(call)                                          \
  do {                                                       \
    if ((call) != napi_ok) {                                 \
      napi_throw_error(env, NULL, "fastpath: N-API failure"); \
      return NULL;                                           \
    }                                                        \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char libbpf_line[512], msg[1024];
  last_libbpf_line(libbpf_line, sizeof libbpf_line);
  if (libbpf_line[0])
    snprintf(msg, sizeof msg, "%s: %s (errno %d); libbpf: %s", what, strerror(err), err, libbpf_line);
  else
    snprintf(msg, sizeof msg, "%s: %s (errno %d)", what, strerror(err), err);
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static int get_u32_prop(napi_env env, napi_value obj, const char *name, uint32_t *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return -1;
  return napi_get_value_uint32(env, v, out) == napi_ok ? 0 : -1;
}

static struct fastpath *handle_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "fastpath: not a fast-path handle");
    return NULL;
  }
  struct fastpath *fp = p;
  if (fp->obj == NULL) {
    napi_throw_error(env, NULL, "fastpath: the fast path is closed");
    return NULL;
  }
  return fp;
}

// ---- attach and detach --------------------------------------------------------------------------

static int tcx_attach(int prog_fd, int ifindex, int attach_type) {
  // union bpf_attr's link_create for tcx: prog_fd, target_ifindex, attach_type, flags, then
  // relative_fd and expected_revision (both 0: append, whatever the revision).
  struct {
    uint32_t prog_fd, target_ifindex, attach_type, flags;
    uint32_t relative_fd, pad;
    uint64_t expected_revision;
  } attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_fd = (uint32_t)prog_fd;
  attr.target_ifindex = (uint32_t)ifindex;
  attr.attach_type = (uint32_t)attach_type;
  int fd = (int)syscall(__NR_bpf, FP_BPF_LINK_CREATE, &attr, sizeof attr);
  return fd < 0 ? -errno : fd;
}

/** The name of the program of our clsact filter at ifindex/point, or "" when there is none. */
static void tc_filter_prog_name(int ifindex, enum bpf_tc_attach_point point, char *name, size_t cap) {
  name[0] = 0;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FP_TC_HANDLE, .priority = FP_TC_PRIORITY);
  if (bpf_tc_query(&hook, &opts) != 0 || opts.prog_id == 0) return;
  int fd = bpf_prog_get_fd_by_id(opts.prog_id);
  if (fd < 0) return;
  struct bpf_prog_info info;
  uint32_t len = sizeof info;
  memset(&info, 0, sizeof info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) snprintf(name, cap, "%s", info.name);
  close(fd);
}

static void tc_detach(int ifindex, enum bpf_tc_attach_point point) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FP_TC_HANDLE, .priority = FP_TC_PRIORITY);
  bpf_tc_detach(&hook, &opts);
}

/** Removes a clsact filter a crashed agent left at our handle/priority with our program. */
static int remove_stale(int ifindex, enum bpf_tc_attach_point point, const char *prog) {
  char name[BPF_OBJ_NAME_LEN];
  tc_filter_prog_name(ifindex, point, name, sizeof name);
  if (strcmp(name, prog) != 0) return 0;
  tc_detach(ifindex, point);
  return 1;
}

static int tc_attach(int prog_fd, int ifindex, enum bpf_tc_attach_point point) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) return err;
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = FP_TC_HANDLE, .priority = FP_TC_PRIORITY, .prog_fd = prog_fd,
              .flags = BPF_TC_F_REPLACE);
  return bpf_tc_attach(&hook, &opts);
}

static void detach_all(struct fastpath *fp) {
  if (fp->egress_link >= 0) close(fp->egress_link);
  if (fp->ingress_link >= 0) close(fp->ingress_link);
  fp->egress_link = fp->ingress_link = -1;
  if (fp->tc_ingress) tc_detach(fp->ext_ifindex, BPF_TC_INGRESS);
  if (fp->tc_egress) tc_detach(fp->tun_ifindex, BPF_TC_EGRESS);
  fp->tc_ingress = fp->tc_egress = 0;
  fp->kind = ATTACH_NONE;
}

static void destroy(struct fastpath *fp) {
  if (fp->obj == NULL) return;
  detach_all(fp);
  bpf_object__close(fp->obj);  // closes the program and map fds: the kernel frees them
  fp->obj = NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct fastpath *fp = data;
  destroy(fp);
  free(fp);
}

// ---- exported functions -------------------------------------------------------------------------

/** load(objectPath, config) -> handle. Throws with libbpf's (or the verifier's) last line. */
static napi_value Load(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  size_t path_len = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "fastpath.load(objectPath, config)");
    return NULL;
  }
  struct fastpath_config cfg;
  memset(&cfg, 0, sizeof cfg);
  uint32_t public_ip, subnet, mask, port;
  if (get_u32_prop(env, argv[1], "publicIp", &public_ip) || get_u32_prop(env, argv[1], "subnet", &subnet) ||
      get_u32_prop(env, argv[1], "subnetMask", &mask) || get_u32_prop(env, argv[1], "tunIfindex", &cfg.tun_ifindex) ||
      get_u32_prop(env, argv[1], "extIfindex", &cfg.ext_ifindex) || get_u32_prop(env, argv[1], "mtu", &cfg.mtu) ||
      get_u32_prop(env, argv[1], "port", &port)) {
    napi_throw_type_error(env, NULL, "fastpath.load: config needs publicIp, subnet, subnetMask, tunIfindex, extIfindex, mtu, port");
    return NULL;
  }
  cfg.public_ip = htonl(public_ip);
  cfg.subnet = htonl(subnet);
  cfg.subnet_mask = htonl(mask);
  cfg.port = htons((uint16_t)port);

  libbpf_set_print(keep_libbpf_message);
  libbpf_log_len = 0;
  libbpf_log[0] = 0;
  struct bpf_object *obj = bpf_object__open_file(path, NULL);
  int err = libbpf_get_error(obj);
  if (err) return throw_errno(env, "cannot open the BPF object", -err);
  err = bpf_object__load(obj);
  if (err) {
    bpf_object__close(obj);
    return throw_errno(env, "the kernel refused the BPF programs", -err);
  }
  struct fastpath *fp = calloc(1, sizeof *fp);
  if (!fp) {
    bpf_object__close(obj);
    return throw_errno(env, "fastpath", ENOMEM);
  }
  fp->obj = obj;
  fp->egress_link = fp->ingress_link = -1;
  fp->tun_ifindex = (int)cfg.tun_ifindex;
  fp->ext_ifindex = (int)cfg.ext_ifindex;
  fp->routes_fd = bpf_object__find_map_fd_by_name(obj, "routes");
  fp->peers_fd = bpf_object__find_map_fd_by_name(obj, "peers");
  fp->counters_fd = bpf_object__find_map_fd_by_name(obj, "counters");
  int config_fd = bpf_object__find_map_fd_by_name(obj, "config");
  struct bpf_program *egress = bpf_object__find_program_by_name(obj, EGRESS_PROG);
  struct bpf_program *ingress = bpf_object__find_program_by_name(obj, INGRESS_PROG);
  struct bpf_map *counters = bpf_object__find_map_by_name(obj, "counters");
  if (fp->routes_fd < 0 || fp->peers_fd < 0 || fp->counters_fd < 0 || config_fd < 0 || !egress || !ingress ||
      !counters) {
    destroy(fp);
    free(fp);
    napi_throw_error(env, NULL, "the BPF object lacks a program or map flannel-ts needs (built from another source?)");
    return NULL;
  }
  fp->egress_fd = bpf_program__fd(egress);
  fp->ingress_fd = bpf_program__fd(ingress);
  fp->counter_slots = bpf_map__max_entries(counters);
  fp->ncpus = libbpf_num_possible_cpus();
  uint32_t zero = 0;
  if (fp->ncpus <= 0 || bpf_map_update_elem(config_fd, &zero, &cfg, BPF_ANY) != 0) {
    int e = fp->ncpus <= 0 ? -fp->ncpus : errno;
    destroy(fp);
    free(fp);
    return throw_errno(env, "cannot write the fast path's config", e);
  }
  napi_value out;
  if (napi_create_external(env, fp, finalize, NULL, &out) != napi_ok) {
    destroy(fp);
    free(fp);
    napi_throw_error(env, NULL, "fastpath: N-API failure");
    return NULL;
  }
  return out;
}

/**
 * attach(handle, allowTcx) -> "tcx" | "tc": egress on flannel0, ingress on the underlay. A crashed
 * agent's clsact filters (ours by handle, priority and program name) are removed first.
 */
static napi_value Attach(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fastpath *fp = argc >= 1 ? handle_of(env, argv[0]) : NULL;
  if (!fp) return NULL;
  bool allow_tcx = true;
  if (argc >= 2) napi_get_value_bool(env, argv[1], &allow_tcx);
  if (fp->kind != ATTACH_NONE) {
    napi_throw_error(env, NULL, "fastpath: already attached");
    return NULL;
  }
  remove_stale(fp->ext_ifindex, BPF_TC_INGRESS, INGRESS_PROG);
  remove_stale(fp->tun_ifindex, BPF_TC_EGRESS, EGRESS_PROG);

  int tcx_err = -EOPNOTSUPP;
  if (allow_tcx) {
    // Ingress first: the underlay's flannel datagrams reach the fast path before it sends any.
    int in = tcx_attach(fp->ingress_fd, fp->ext_ifindex, FP_BPF_TCX_INGRESS);
    if (in >= 0) {
      int out = tcx_attach(fp->egress_fd, fp->tun_ifindex, FP_BPF_TCX_EGRESS);
      if (out >= 0) {
        fp->ingress_link = in;
        fp->egress_link = out;
        fp->kind = ATTACH_TCX;
        napi_value s;
        napi_create_string_utf8(env, "tcx", NAPI_AUTO_LENGTH, &s);
        return s;
      }
      close(in);
      tcx_err = out;
    } else {
      tcx_err = in;
    }
  }
  int err = tc_attach(fp->ingress_fd, fp->ext_ifindex, BPF_TC_INGRESS);
  if (err == 0) {
    fp->tc_ingress = 1;
    err = tc_attach(fp->egress_fd, fp->tun_ifindex, BPF_TC_EGRESS);
    if (err == 0) fp->tc_egress = 1;
  }
  if (err != 0) {
    detach_all(fp);
    char what[160];
    snprintf(what, sizeof what, "cannot attach the TC programs (tcx: %s; clsact)", strerror(-tcx_err));
    return throw_errno(env, what, -err);
  }
  fp->kind = ATTACH_TC;
  napi_value s;
  napi_create_string_utf8(env, "tc", NAPI_AUTO_LENGTH, &s);
  return s;
}

/** routeSet(handle, prefix, prefixLen, publicIp) -> 0 | -errno (host-order uint32 arguments). */
static napi_value RouteSet(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fastpath *fp = argc >= 4 ? handle_of(env, argv[0]) : NULL;
  if (!fp) return NULL;
  uint32_t prefix, len, public_ip;
  CHECK(napi_get_value_uint32(env, argv[1], &prefix));
  CHECK(napi_get_value_uint32(env, argv[2], &len));
  CHECK(napi_get_value_uint32(env, argv[3], &public_ip));
  struct route_key key = {.prefixlen = len, .addr = htonl(prefix)};
  uint32_t value = htonl(public_ip);
  return num(env, bpf_map_update_elem(fp->routes_fd, &key, &value, BPF_ANY) == 0 ? 0 : -errno);
}

/** routeDelete(handle, prefix, prefixLen) -> 0 | -errno. */
static napi_value RouteDelete(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fastpath *fp = argc >= 3 ? handle_of(env, argv[0]) : NULL;
  if (!fp) return NULL;
  uint32_t prefix, len;
  CHECK(napi_get_value_uint32(env, argv[1], &prefix));
  CHECK(napi_get_value_uint32(env, argv[2], &len));
  struct route_key key = {.prefixlen = len, .addr = htonl(prefix)};
  return num(env, bpf_map_delete_elem(fp->routes_fd, &key) == 0 ? 0 : -errno);
}

/** peerSet(handle, publicIp) / peerDelete(handle, publicIp) -> 0 | -errno. */
static napi_value peer_op(napi_env env, napi_callback_info info, int set) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fastpath *fp = argc >= 2 ? handle_of(env, argv[0]) : NULL;
  if (!fp) return NULL;
  uint32_t ip;
  CHECK(napi_get_value_uint32(env, argv[1], &ip));
  uint32_t key = htonl(ip), one = 1;
  int r = set ? bpf_map_update_elem(fp->peers_fd, &key, &one, BPF_ANY) : bpf_map_delete_elem(fp->peers_fd, &key);
  return num(env, r == 0 ? 0 : -errno);
}
static napi_value PeerSet(napi_env env, napi_callback_info info) { return peer_op(env, info, 1); }
static napi_value PeerDelete(napi_env env, napi_callback_info info) { return peer_op(env, info, 0); }

/** counters(handle, out: Float64Array) -> slots filled: each slot summed over the CPUs. */
static napi_value Counters(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct fastpath *fp = argc >= 2 ? handle_of(env, argv[0]) : NULL;
  if (!fp) return NULL;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "fastpath.counters: out must be a Float64Array");
    return NULL;
  }
  double *out = data;
  uint64_t *values = calloc((size_t)fp->ncpus, sizeof *values);
  if (!values) return num(env, -ENOMEM);
  unsigned slots = fp->counter_slots < length ? fp->counter_slots : (unsigned)length;
  for (uint32_t slot = 0; slot < slots; slot++) {
    double sum = 0;
    if (bpf_map_lookup_elem(fp->counters_fd, &slot, values) == 0)
      for (int cpu = 0; cpu < fp->ncpus; cpu++) sum += (double)values[cpu];
    out[slot] = sum;
  }
  free(values);
  return num(env, slots);
}

/** close(handle): detaches both programs and frees programs and maps. Idempotent. */
static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *p = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "fastpath.close(handle)");
    return NULL;
  }
  destroy(p);
  return NULL;
}

/** ifindex(name) -> the interface's index in this namespace, or -errno. */
static napi_value Ifindex(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IF_NAMESIZE + 1];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "fastpath.ifindex(name)");
    return NULL;
  }
  unsigned idx = if_nametoindex(name);
  return num(env, idx == 0 ? -errno : (double)idx);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"load", NULL, Load, NULL, NULL, NULL, napi_default, NULL},
      {"attach", NULL, Attach, NULL, NULL, NULL, napi_default, NULL},
      {"routeSet", NULL, RouteSet, NULL, NULL, NULL, napi_default, NULL},
      {"routeDelete", NULL, RouteDelete, NULL, NULL, NULL, napi_default, NULL},
      {"peerSet", NULL, PeerSet, NULL, NULL, NULL, napi_default, NULL},
      {"peerDelete", NULL, PeerDelete, NULL, NULL, NULL, napi_default, NULL},
      {"counters", NULL, Counters, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
      {"ifindex", NULL, Ifindex, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
