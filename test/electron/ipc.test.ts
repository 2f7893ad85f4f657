import { describe, expect, it } from 'vitest';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { IPC } from '../../main/electron/channels.js';
import {
  registerAgentIpc,
  UntrustedSenderError,
  type IpcMainLike,
  type InvokeEventLike,
} from '../../main/electron/ipc.js';
import { isTrustedRendererFrame } from '../../main/electron/sender-check.js';
import { sampleSnapshot } from '../e2e/renderer-fixtures/snapshot.js';

type Handler = (event: InvokeEventLike, ...args: unknown[]) => unknown;

/** Stands in for Electron's ipcMain: keeps the handlers so the test can invoke them as a renderer would. */
class FakeIpcMain implements IpcMainLike {
  readonly handlers = new Map<string, Handler>();
  handle(channel: string, handler: Handler): void {
    if (this.handlers.has(channel)) throw new Error(`second handler for ${channel}`);
    this.handlers.set(channel, handler);
  }
  removeHandler(channel: string): void {
    this.handlers.delete(channel);
  }
  invoke(channel: string, url: string, ...args: unknown[]): Promise<unknown> {
    const handler = this.handlers.get(channel);
    if (!handler) throw new Error(`no handler for ${channel}`);
    return Promise.resolve().then(() => handler({ senderFrame: { url, parent: null } }, ...args));
  }
}

function fakeAgent() {
  const commands: AgentCommand[] = [];
  const listeners = new Set<(s: AgentSnapshot) => void>();
  return {
    commands,
    push: (s: AgentSnapshot) => listeners.forEach((l) => l(s)),
    listenerCount: () => listeners.size,
    snapshot: () => sampleSnapshot(),
    onSnapshot(listener: (s: AgentSnapshot) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async command(command: AgentCommand): Promise<CommandResult> {
      commands.push(command);
      return { ok: true };
    },
  };
}

const OURS = 'app://tributary/index.html';

describe('agent IPC in Electron main', () => {
  it('answers our renderer on the two fixed channels only', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame, () => []);
    expect([...ipc.handlers.keys()].sort()).toEqual([IPC.command, IPC.snapshot].sort());
    expect(await ipc.invoke(IPC.snapshot, OURS)).toMatchObject({ state: 'running' });
    expect(await ipc.invoke(IPC.command, OURS, { type: 'pause', duration: '1h' })).toEqual({ ok: true });
    expect(agent.commands).toEqual([{ type: 'pause', duration: '1h' }]);
  });

  it('refuses every call from a frame that is not our bundle, before touching the agent', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame, () => []);
    await expect(ipc.invoke(IPC.snapshot, 'https://evil.example/')).rejects.toBeInstanceOf(
      UntrustedSenderError,
    );
    await expect(ipc.invoke(IPC.command, 'app://gpu-worker/index.html', { type: 'resume' })).rejects.toThrow(
      /refused IPC on tributary:command from app:\/\/gpu-worker/,
    );
    expect(agent.commands).toEqual([]);
  });

  it('validates commands against the contract and says what is wrong', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame, () => []);
    const result = (await ipc.invoke(IPC.command, OURS, {
      type: 'runShell',
      script: 'rm -rf ~',
    })) as CommandResult;
    expect(result.ok).toBe(false);
    const bad = (await ipc.invoke(IPC.command, OURS, {
      type: 'pause',
      duration: 'forever',
    })) as CommandResult;
    expect(bad).toMatchObject({ ok: false, errors: [expect.stringMatching(/^duration: /)] });
    expect(agent.commands).toEqual([]);
  });

  it('pushes snapshots to trusted windows only, and unregisters cleanly', () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    const received: string[] = [];
    const target = (name: string, trusted: boolean) => ({
      send: (channel: string) => received.push(`${name}:${channel}`),
      isTrusted: () => trusted,
    });
    const dispose = registerAgentIpc(ipc, agent, isTrustedRendererFrame, () => [
      target('ours', true),
      target('navigated-away', false),
    ]);
    agent.push(sampleSnapshot());
    expect(received).toEqual([`ours:${IPC.snapshotPushed}`]);
    dispose();
    expect(ipc.handlers.size).toBe(0);
    expect(agent.listenerCount()).toBe(0);
  });
});
