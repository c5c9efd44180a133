{
  "targets": [
    {
      "target_name": "flannel_fastpath",
      "sources": ["loader.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-lbpf"]
    }
  ]
}
