// The backends by Backend.Type, as flannel's backend.Register / GetBackend.
import type { BackendConfig } from '../subnet/config.js';
import type { Backend, BackendContext } from './backend.js';
import { HostGwBackend } from './host-gw.js';
import { UdpBackend } from './udp.js';
import { VxlanBackend } from './vxlan.js';

export function createBackend(config: BackendConfig, ctx: BackendContext): Backend {
  switch (config.type) {
    case 'udp':
      return new UdpBackend(config, ctx);
    case 'vxlan':
      return new VxlanBackend(config, ctx);
    case 'host-gw':
      return new HostGwBackend(ctx);
  }
}
