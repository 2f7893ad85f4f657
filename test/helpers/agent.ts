import { Agent, type AgentOptions } from '../../main/agent/agent.js';

/**
 * An agent with nothing of this machine in it: no GPU telemetry, no host sensors or polling, and no ticking
 * of its own (tests drive it). `options` adds to or overrides that.
 */
export function openQuietAgent(
  options: Partial<AgentOptions> & Pick<AgentOptions, 'dataDir'>,
): Promise<Agent> {
  return Agent.open({ telemetrySources: [], hostSensors: false, pollHost: false, tickMs: 0, ...options });
}
