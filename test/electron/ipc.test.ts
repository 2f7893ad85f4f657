import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../main/agent/clock.js';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import type { SnapshotMessage } from '../../shared/dashboard/snapshot-changes.js';
import { IPC } from '../../main/electron/channels.js';
import {
  registerAgentIpc,
  UntrustedSenderError,
  type IpcMainLike,
  type InvokeEventLike,
  type WebContentsLike,
} from '../../main/electron/ipc.js';
import { createPreloadBridge, type IpcRendererLike } from '../../main/electron/preload-bridge.js';
import { isTrustedRendererFrame } from '../../main/electron/sender-check.js';
import { sampleSnapshot } from '../e2e/renderer-fixtures/snapshot.js';
import { openQuietAgent } from '../helpers/agent.js';

type Handler = (event: InvokeEventLike, ...args: unknown[]) => unknown;

const OURS = 'app://tributary/index.html';

/** Stands in for Electron's ipcMain: keeps the handlers so a fake renderer can invoke them. */
class FakeIpcMain implements IpcMainLike {
  readonly handlers = new Map<string, Handler>();
  handle(channel: string, handler: Handler): void {
    if (this.handlers.has(channel)) throw new Error(`second handler for ${channel}`);
    this.handlers.set(channel, handler);
  }
  removeHandler(channel: string): void {
    this.handlers.delete(channel);
  }
}

let nextId = 1;

/**
 * One window's WebContents and its preload's ipcRenderer, joined the way Electron joins them: invoke reaches
 * main's handler with this window as the sender, and what main sends arrives at the page's listeners in order.
 */
class FakeWindow implements WebContentsLike, IpcRendererLike {
  readonly id = nextId++;
  mainFrame = { url: OURS, parent: null };
  readonly sent: SnapshotMessage[] = [];
  private destroyed = false;
  private readonly onDestroyed: (() => void)[] = [];
  private readonly pageListeners: ((event: unknown, message: SnapshotMessage) => void)[] = [];

  constructor(private readonly ipcMain: FakeIpcMain) {}

  // WebContentsLike (main's side)
  send(channel: string, message: SnapshotMessage): void {
    expect(channel).toBe(IPC.snapshotChanges);
    // Electron serializes every message: the page never shares an object with main.
    const copy = structuredClone(message);
    this.sent.push(copy);
    for (const listener of this.pageListeners) listener({}, copy);
  }
  isDestroyed(): boolean {
    return this.destroyed;
  }
  once(_event: 'destroyed', listener: () => void): void {
    this.onDestroyed.push(listener);
  }
  destroy(): void {
    this.destroyed = true;
    for (const listener of this.onDestroyed) listener();
  }
  /** A reload: the preload runs again in a fresh page, its listeners gone. */
  reload(): void {
    this.pageListeners.length = 0;
  }

  // IpcRendererLike (the preload's side)
  async invoke(channel: string, ...args: unknown[]): Promise<unknown> {
    const handler = this.ipcMain.handlers.get(channel);
    if (!handler) throw new Error(`no handler for ${channel}`);
    const reply = await Promise.resolve().then(() =>
      handler({ senderFrame: { ...this.mainFrame }, sender: this }, ...args),
    );
    return structuredClone(reply);
  }
  on(channel: string, listener: (event: unknown, message: SnapshotMessage) => void): void {
    expect(channel).toBe(IPC.snapshotChanges);
    this.pageListeners.push(listener);
  }
}

function fakeAgent() {
  const commands: AgentCommand[] = [];
  const listeners = new Set<(s: AgentSnapshot) => void>();
  let current = sampleSnapshot();
  return {
    commands,
    /** The agent publishes a new snapshot, as its 1 s tick does. */
    publish(change: Partial<AgentSnapshot> = {}) {
      current = { ...current, at: new Date(Date.parse(current.at) + 1000).toISOString(), ...change };
      listeners.forEach((l) => l(current));
    },
    listenerCount: () => listeners.size,
    snapshot: () => current,
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

const dir = mkdtempSync(join(tmpdir(), 'tributary-ipc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let now = Date.parse('2026-11-25T15:30:00Z');

const bytes = (message: unknown): number => Buffer.byteLength(JSON.stringify(message));

describe('agent IPC in Electron main', () => {
  it('answers our renderer on the two fixed channels only', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    expect([...ipc.handlers.keys()].sort()).toEqual([IPC.command, IPC.subscribe].sort());
    const page = new FakeWindow(ipc);
    expect(await page.invoke(IPC.subscribe)).toEqual({ type: 'snapshot', snapshot: agent.snapshot() });
    expect(await page.invoke(IPC.command, { type: 'pause', duration: '1h' })).toEqual({ ok: true });
    expect(agent.commands).toEqual([{ type: 'pause', duration: '1h' }]);
  });

  it('refuses every call from a frame that is not our bundle, before touching the agent', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const evil = new FakeWindow(ipc);
    evil.mainFrame = { url: 'https://evil.example/', parent: null };
    await expect(evil.invoke(IPC.subscribe)).rejects.toBeInstanceOf(UntrustedSenderError);
    const worker = new FakeWindow(ipc);
    worker.mainFrame = { url: 'app://gpu-worker/index.html', parent: null };
    await expect(worker.invoke(IPC.command, { type: 'resume' })).rejects.toThrow(
      /refused IPC on tributary:command from app:\/\/gpu-worker/,
    );
    agent.publish({ state: 'paused' });
    expect([...evil.sent, ...worker.sent]).toEqual([]);
    expect(agent.commands).toEqual([]);
  });

  it('validates commands against the contract and says what is wrong', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const page = new FakeWindow(ipc);
    const result = (await page.invoke(IPC.command, {
      type: 'runShell',
      script: 'rm -rf ~',
    })) as CommandResult;
    expect(result.ok).toBe(false);
    const bad = (await page.invoke(IPC.command, { type: 'pause', duration: 'forever' })) as CommandResult;
    expect(bad).toMatchObject({ ok: false, errors: [expect.stringMatching(/^duration: /)] });
    expect(agent.commands).toEqual([]);
  });

  it('sends a subscribed window the whole snapshot once, then only what changed, which the preload rebuilds', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const page = new FakeWindow(ipc);
    const bridge = createPreloadBridge(page);
    const seen: AgentSnapshot[] = [];
    bridge.onSnapshot((s) => seen.push(s));
    expect(await bridge.snapshot()).toEqual(agent.snapshot());

    // A tick that moved only the clock sends nothing at all.
    agent.publish();
    expect(page.sent).toEqual([]);

    agent.publish({ telemetry: { ...agent.snapshot().telemetry, gpuTempC: 72 } });
    agent.publish({ loss: [...agent.snapshot().loss, { step: 420, loss: 1.6 }] });
    agent.publish({ state: 'paused', reasonCode: 'user-paused', reason: 'Paused by you' });
    expect(page.sent.map((m) => m.type)).toEqual(['changes', 'changes', 'changes']);
    const [temperature, loss] = page.sent as Extract<SnapshotMessage, { type: 'changes' }>[];
    expect(Object.keys(temperature!.fields).sort()).toEqual(['at', 'telemetry']);
    expect(loss!.lossTail).toEqual([{ step: 420, loss: 1.6 }]);
    // What the page holds is the agent's snapshot, field for field, after every message.
    expect(seen.at(-1)).toEqual(agent.snapshot());
    expect(await bridge.snapshot()).toEqual(agent.snapshot());
    expect(seen).toHaveLength(4);
    // The point of it: a temperature tick costs a fraction of the whole snapshot.
    expect(bytes(temperature)).toBeLessThan(bytes(agent.snapshot()) / 5);
  });

  it('keeps one stream per window: a window that subscribes later, or reloads, starts from a whole snapshot', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const first = new FakeWindow(ipc);
    await createPreloadBridge(first).snapshot();
    agent.publish({ dutyCyclePct: 50 });
    const second = new FakeWindow(ipc);
    const late = createPreloadBridge(second);
    expect(await late.snapshot()).toEqual(agent.snapshot());
    agent.publish({ dutyCyclePct: 40 });
    expect(first.sent.map((m) => m.type)).toEqual(['changes', 'changes']);
    expect(second.sent).toEqual([
      expect.objectContaining({ type: 'changes', fields: expect.objectContaining({ dutyCyclePct: 40 }) }),
    ]);

    first.reload();
    const reloaded = createPreloadBridge(first);
    expect(await reloaded.snapshot()).toEqual(agent.snapshot());
    agent.publish({ dutyCyclePct: 30 });
    // Diffed against what the reloaded page was given, not what the page before it held.
    expect(first.sent.at(-1)).toMatchObject({ type: 'changes', fields: { dutyCyclePct: 30 } });
    expect(await reloaded.snapshot()).toEqual(agent.snapshot());
  });

  it('stops sending to a window that navigated away or closed, and unregisters cleanly', async () => {
    const ipc = new FakeIpcMain();
    const agent = fakeAgent();
    const dispose = registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const navigated = new FakeWindow(ipc);
    const closed = new FakeWindow(ipc);
    await navigated.invoke(IPC.subscribe);
    await closed.invoke(IPC.subscribe);
    navigated.mainFrame = { url: 'https://elsewhere.example/', parent: null };
    closed.destroy();
    agent.publish({ state: 'paused' });
    navigated.mainFrame = { url: OURS, parent: null };
    agent.publish({ state: 'running' });
    expect([...navigated.sent, ...closed.sent]).toEqual([]);
    dispose();
    expect(ipc.handlers.size).toBe(0);
    expect(agent.listenerCount()).toBe(0);
  });

  it("carries the real agent's snapshots through main and the preload unchanged", async () => {
    const agent = await openQuietAgent({
      dataDir: dir,
      settings: { ...defaultSettings, runWhen: 'always' },
      clock: { now: () => now, sleep: systemClock.sleep },
    });
    const ipc = new FakeIpcMain();
    registerAgentIpc(ipc, agent, isTrustedRendererFrame);
    const page = new FakeWindow(ipc);
    const bridge = createPreloadBridge(page);
    const seen: AgentSnapshot[] = [];
    bridge.onSnapshot((s) => seen.push(s));
    await bridge.snapshot();
    agent.tick();
    expect(page.sent).toEqual([]);
    expect(await bridge.command({ type: 'pause', duration: 'indefinitely' })).toEqual({ ok: true });
    now += 1000;
    agent.addLoss(1, 3.5);
    agent.tick();
    expect(page.sent.every((m) => m.type === 'changes')).toBe(true);
    expect(page.sent.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toEqual(agent.snapshot());
    expect(seen.at(-1)).toMatchObject({
      state: 'paused',
      reasonCode: 'user-paused',
      loss: [{ step: 1, loss: 3.5 }],
    });
    await agent.stop();
  });
});
