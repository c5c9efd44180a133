/** The network-namespace lab: public surface for the demo, the integration tests and the bench. */
export { Lab, NETWORK, UNDERLAY_SWITCH_ADDR, FLANNEL_UDP_PORT, defaultRepoDir, type LabOptions } from './lab.js';
export { LAB_MODES, podMtuFor, agentEntry, staticAgentArgs, type LabMode } from './modes.js';
export { AgentProcess, type AgentCounters } from './agent.js';
export { removeStaleLabNamespaces, listNamespaces } from './namespaces.js';
export { requireTools, requireToolsFor, waitForExit, CommandError, type ExecResult } from './exec.js';
export type { PingResult, TcpThroughput, UdpThroughput } from './measure.js';
