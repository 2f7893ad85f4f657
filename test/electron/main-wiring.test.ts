import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { IPC, RENDERER_URL, GPU_WORKER_URL } from '../../main/electron/channels.js';
import { NETWORK } from '../e2e/renderer-fixtures/snapshot.js';

/**
 * Loads the real main.ts against a fake Electron (the binary is not installed here) with the real agent and
 * host composition (a fake node runtime stands in for the network), and checks the wiring: what is
 * registered before and after `ready`, which windows open with which options, that the node joins the
 * network accepted in settings with its key pinned, and that quitting waits for the node and the agent.
 */
const fake = await vi.hoisted(async () => {
  const { EventEmitter } = await import('node:events');
  const calls: string[] = [];
  const appEvents = new Map<string, ((...args: unknown[]) => void)[]>();
  const windows: FakeWindow[] = [];
  const handlers = new Map<string, unknown>();
  let protocolHandler: ((request: Request) => Promise<Response>) | null = null;
  let permissionRequest: ((c: unknown, p: string, cb: (granted: boolean) => void) => void) | null = null;
  const trays: { image: string; tooltip: string }[] = [];

  class FakeWindow {
    options: Record<string, unknown>;
    url = '';
    shown = false;
    posted: { channel: string; ports: unknown[] }[] = [];
    webContents = {
      id: windows.length + 1,
      mainFrame: { url: '', parent: null as unknown },
      sent: [] as { channel: string; message: { type: string } }[],
      send(channel: string, message: { type: string }) {
        this.sent.push({ channel, message });
      },
      isDestroyed: () => false,
      once: () => undefined,
      postMessage: (channel: string, _message: unknown, ports: unknown[]) =>
        this.posted.push({ channel, ports }),
      on: () => undefined,
    };
    constructor(options: Record<string, unknown>) {
      this.options = options;
      windows.push(this);
    }
    once(event: string, listener: () => void) {
      if (event === 'ready-to-show') queueMicrotask(listener);
    }
    on() {}
    async loadURL(url: string) {
      this.url = url;
      this.webContents.mainFrame.url = url;
    }
    isMinimized = () => false;
    restore() {}
    show() {
      this.shown = true;
    }
    focus() {}
    static getAllWindows = () => windows;
  }

  /** The GPU worker page's end, answering "acquire" as a page with a WebGPU adapter would. */
  class FakePort extends EventEmitter {
    postMessage(message: { id: number; type: string }) {
      if (message.type !== 'acquire') return;
      const adapter = {
        vendor: 'fake',
        architecture: '',
        device: '',
        description: 'fake GPU',
        features: [],
        isFallback: false,
      };
      const limits = { maxBufferSize: 1, maxStorageBufferBindingSize: 1, maxComputeWorkgroupStorageSize: 1 };
      queueMicrotask(() =>
        this.emit('message', { data: { id: message.id, type: 'acquired', adapter, limits } }),
      );
    }
    start() {}
    close() {}
  }

  const electron = {
    app: {
      getAppPath: () => process.env.TRIBUTARY_TEST_APP_ROOT ?? '/nonexistent',
      isPackaged: false,
      commandLine: { appendSwitch: (name: string) => calls.push(`switch:${name}`) },
      requestSingleInstanceLock: () => (calls.push('lock'), true),
      quit: () => calls.push('quit'),
      exit: (code: number) => calls.push(`exit:${code}`),
      on: (event: string, listener: (...args: unknown[]) => void) => {
        appEvents.set(event, [...(appEvents.get(event) ?? []), listener]);
      },
      whenReady: () => (calls.push('whenReady'), Promise.resolve()),
      getPath: () => process.env.TRIBUTARY_HOME,
      getLoginItemSettings: () => ({ openAtLogin: false }),
      setLoginItemSettings: () => undefined,
    },
    BrowserWindow: FakeWindow,
    ipcMain: {
      handle: (channel: string, handler: unknown) => handlers.set(channel, handler),
      removeHandler: (channel: string) => handlers.delete(channel),
    },
    Menu: { setApplicationMenu: () => undefined, buildFromTemplate: (t: unknown) => t },
    nativeImage: { createEmpty: () => ({ path: '' }), createFromPath: (path: string) => ({ path }) },
    powerMonitor: Object.assign(new EventEmitter(), {
      getSystemIdleTime: () => 0,
      getSystemIdleState: () => 'active',
      isOnBatteryPower: () => false,
      getCurrentThermalState: () => 'unknown',
    }),
    protocol: {
      registerSchemesAsPrivileged: (schemes: unknown) => calls.push(`privileged:${JSON.stringify(schemes)}`),
      handle: (scheme: string, handler: (request: Request) => Promise<Response>) => {
        calls.push(`handle:${scheme}`);
        protocolHandler = handler;
      },
    },
    session: {
      defaultSession: {
        setPermissionRequestHandler: (h: typeof permissionRequest) => (permissionRequest = h),
        setPermissionCheckHandler: () => undefined,
      },
    },
    shell: { openExternal: () => Promise.resolve() },
    safeStorage: {
      isEncryptionAvailable: () => true,
      encryptString: (text: string) => Buffer.from(text, 'utf8').reverse(),
      decryptString: (data: Buffer) => Buffer.from(data).reverse().toString('utf8'),
    },
    Tray: class {
      state = { image: '', tooltip: '' };
      constructor() {
        trays.push(this.state);
      }
      setImage(image: { path: string }) {
        this.state.image = image.path;
      }
      setToolTip(tooltip: string) {
        this.state.tooltip = tooltip;
      }
      setContextMenu() {}
      on() {}
    },
    MessageChannelMain: class {
      port1 = new FakePort();
      port2 = new FakePort();
    },
  };

  const nodes: { options: Record<string, unknown> }[] = [];
  class FakeNodeRuntime extends EventEmitter {
    constructor(readonly options: Record<string, unknown>) {
      super();
      nodes.push(this);
    }
    start() {
      calls.push('node.start');
    }
    async stop() {
      calls.push('node.stop');
    }
    status = { receipts: 0 };
  }

  return {
    electron,
    nodes,
    FakeNodeRuntime,
    calls,
    appEvents,
    windows,
    handlers,
    trays,
    protocol: () => protocolHandler,
    permissionRequest: () => permissionRequest,
  };
});

vi.mock('electron', () => fake.electron);
vi.mock('electron-updater', () => ({ default: { autoUpdater: {} } }));
vi.mock('../../main/agent/host-signals.js', () => ({ listProcessNames: async () => [] }));
vi.mock('../../main/node/runtime.js', () => ({ NodeRuntime: fake.FakeNodeRuntime }));

describe('Electron main wiring (fake Electron, real agent)', () => {
  beforeAll(async () => {
    const root = process.env.TRIBUTARY_TEST_APP_ROOT;
    if (!root) throw new Error('set by the setup below');
    await import('../../main/electron/main.js');
    await vi.waitFor(() => expect(fake.windows.length).toBe(2));
    await vi.waitFor(() => expect(fake.nodes).toHaveLength(1));
  });

  it('takes the single-instance lock and registers app:// as privileged before ready', () => {
    const lock = fake.calls.indexOf('lock');
    const privileged = fake.calls.findIndex((c) => c.startsWith('privileged:'));
    expect(lock).toBeGreaterThanOrEqual(0);
    expect(privileged).toBeLessThan(fake.calls.indexOf('whenReady'));
    expect(fake.calls[privileged]).toContain('"scheme":"app"');
    expect(fake.calls[privileged]).toContain('"secure":true');
  });

  it('denies permissions, serves the bundle with a CSP and answers IPC only on the fixed channels', async () => {
    const answers: boolean[] = [];
    fake.permissionRequest()?.(null, 'media', (granted) => answers.push(granted));
    expect(answers).toEqual([false]);
    expect([...fake.handlers.keys()].sort()).toEqual([IPC.command, IPC.subscribe].sort());

    const response = await fake.protocol()!(new Request('app://tributary/index.html'));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await response.text()).toContain('test bundle');
    expect((await fake.protocol()!(new Request('app://tributary/..%2f..%2fsecret'))).status).toBe(404);
  });

  it('opens the hardened main window on our bundle and the hidden GPU worker with its port', () => {
    const [main, worker] = [
      fake.windows.find((w) => w.url === RENDERER_URL),
      fake.windows.find((w) => w.url === GPU_WORKER_URL),
    ];
    expect(main?.options.webPreferences).toMatchObject({
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
    });
    expect(String((main?.options.webPreferences as { preload: string }).preload)).toMatch(
      /dist\/preload\/preload\.cjs$/,
    );
    expect(worker?.options.show).toBe(false);
    expect(worker?.posted.map((p) => p.channel)).toEqual([IPC.gpuPort]);
    expect(worker?.posted[0]?.ports).toHaveLength(1);
  });

  it('sends the window that subscribes the whole snapshot once, then only changes', async () => {
    const main = fake.windows.find((w) => w.url === RENDERER_URL)!;
    const subscribe = fake.handlers.get(IPC.subscribe) as (event: unknown) => { type: string };
    const first = subscribe({ senderFrame: main.webContents.mainFrame, sender: main.webContents });
    expect(first).toMatchObject({ type: 'snapshot', snapshot: { version: 1 } });
    // A change the test makes, rather than waiting for the agent's clock to change something.
    const command = fake.handlers.get(IPC.command) as (event: unknown, raw: unknown) => Promise<unknown>;
    const event = { senderFrame: main.webContents.mainFrame, sender: main.webContents };
    expect(await command(event, { type: 'pause', duration: 'indefinitely' })).toMatchObject({ ok: true });
    await vi.waitFor(() => expect(main.webContents.sent.length).toBeGreaterThan(0), { timeout: 20_000 });
    expect(await command(event, { type: 'resume' })).toMatchObject({ ok: true });
    expect(main.webContents.sent.map((s) => [s.channel, s.message.type])).toEqual(
      main.webContents.sent.map(() => [IPC.snapshotChanges, 'changes']),
    );
  });

  it("shows the agent's one state in the tray", async () => {
    // The node has not connected (its runtime is a fake), so the truthful state is "connecting".
    await vi.waitFor(() => expect(fake.trays[0]?.tooltip).toBe('Tributary: Connecting to 127.0.0.1:9…'));
    expect(fake.trays[0]?.image).toMatch(/assets\/tray-waiting-(16|32)\.png$/);
  });

  it('joins the network accepted in settings, its key pinned, training on the GPU worker', () => {
    const options = fake.nodes[0]!.options;
    expect(options).toMatchObject({
      coordinatorUrl: NETWORK.url,
      coordinatorKey: NETWORK.coordinatorKey,
      engine: 'gpu',
    });
    expect(typeof (options.gate as { waitUntilAllowed: unknown }).waitUntilAllowed).toBe('function');
    expect(typeof (options.sink as { accept: unknown }).accept).toBe('function');
    expect(typeof options.createStage).toBe('function');
    expect((options.keys as { publicKeyHex: string }).publicKeyHex).toMatch(/^[0-9a-f]{64}$/);
    expect(fake.calls).toContain('node.start');
  });

  it('writes its log to rotating files in the app-data folder', () => {
    expect(readFileSync(join(process.env.TRIBUTARY_HOME!, 'logs', 'tributary.log'), 'utf8')).toContain(
      'GPU worker acquired a WebGPU device',
    );
  });

  it('hands work back before the computer sleeps and reconnects after', async () => {
    const before = fake.nodes.length;
    fake.electron.powerMonitor.emit('suspend');
    await vi.waitFor(() => expect(fake.calls.filter((c) => c === 'node.stop')).toHaveLength(1));
    fake.electron.powerMonitor.emit('resume');
    await vi.waitFor(() => expect(fake.nodes).toHaveLength(before + 1));
  });

  it('stops the node and flushes the ledger before quitting', async () => {
    let prevented = false;
    for (const listener of fake.appEvents.get('before-quit') ?? [])
      listener({ preventDefault: () => (prevented = true) });
    expect(prevented).toBe(true);
    await vi.waitFor(() => expect(fake.calls.at(-1)).toBe('quit'));
    expect(fake.calls.lastIndexOf('node.stop')).toBeLessThan(fake.calls.lastIndexOf('quit'));
  });
});

// main.ts reads the app root when it loads, so the fake bundle must exist before the import above runs.
const appRoot = mkdtempSync(join(tmpdir(), 'tributary-app-'));
mkdirSync(join(appRoot, 'dist', 'web'), { recursive: true });
writeFileSync(join(appRoot, 'dist', 'web', 'index.html'), '<!doctype html><title>test bundle</title>');
process.env.TRIBUTARY_TEST_APP_ROOT = appRoot;
process.env.TRIBUTARY_HOME = join(appRoot, 'home');
mkdirSync(process.env.TRIBUTARY_HOME);
writeFileSync(
  join(process.env.TRIBUTARY_HOME, 'settings.json'),
  JSON.stringify({ runWhen: 'always', networks: [NETWORK], activeNetwork: NETWORK.url }),
);
