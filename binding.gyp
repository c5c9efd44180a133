{
  "targets": [
    {
      "target_name": "flannel_shim",
      "sources": ["native/shim.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
