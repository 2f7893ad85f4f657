import type { AgentCommand, AgentSnapshot, CommandResult } from '../../../shared/dashboard/contract.js';
import { applySettingsPatch } from '../../../shared/dashboard/settings.js';

/**
 * A scripted agent behind the real dashboard server: it records every command and answers the way the agent
 * would (pausing, saving settings, checking the payout address), pushing a new snapshot after each change.
 */
export class FakeAgent {
  readonly commands: AgentCommand[] = [];
  private current: AgentSnapshot;
  private readonly listeners = new Set<(snapshot: AgentSnapshot) => void>();

  constructor(initial: AgentSnapshot) {
    this.current = initial;
  }

  snapshot(): AgentSnapshot {
    return this.current;
  }

  onSnapshot(listener: (snapshot: AgentSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  push(change: Partial<AgentSnapshot>): void {
    this.current = { ...this.current, ...change };
    for (const listener of this.listeners) listener(this.current);
  }

  async command(command: AgentCommand): Promise<CommandResult> {
    this.commands.push(command);
    switch (command.type) {
      case 'pause':
        this.push({
          state: 'paused',
          reasonCode: 'user-paused',
          reason: 'Paused by you.',
          dutyCyclePct: 0,
          resumeAt:
            command.duration === '1h'
              ? new Date(Date.parse(this.current.at) + 3_600_000).toISOString()
              : null,
        });
        return { ok: true };
      case 'resume':
        this.push({ state: 'running', reasonCode: 'running', reason: 'Contributing again.', resumeAt: null });
        return { ok: true };
      case 'updateSettings': {
        const result = applySettingsPatch(this.current.settings, command.patch);
        if (!result.ok) return result;
        this.push({ settings: result.settings });
        return { ok: true };
      }
      case 'setPayoutAddress':
        // Stands in for the agent's EIP-55 checksum check: all-lowercase passes, anything mixed-case fails.
        if (command.address !== command.address.toLowerCase()) {
          return {
            ok: false,
            errors: ['payout address: the checksum (upper/lower case letters) does not match'],
          };
        }
        this.push({ wallet: { ...this.current.wallet, payoutAddress: command.address } });
        return { ok: true };
      case 'probeNetwork':
        return { ok: false, errors: [`url: cannot reach ${command.url}`] };
      case 'joinNetwork':
        this.push({
          settings: {
            ...this.current.settings,
            networks: [command.network],
            activeNetwork: command.network.url,
            startAtLogin: command.startAtLogin,
          },
        });
        return { ok: true };
    }
  }

  exportCsv(table: string): string {
    if (table !== 'receipts') throw new Error(`no table "${table}"`);
    return 'receipt_id,status\r\nr-1000,pending\r\n';
  }
}
