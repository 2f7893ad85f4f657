import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  app,
  BrowserWindow,
  ipcMain,
  Menu,
  nativeImage,
  powerMonitor,
  protocol,
  safeStorage,
  session,
  shell,
  Tray,
} from 'electron';
import electronUpdater from 'electron-updater';
import pino from 'pino';
import { Agent } from '../agent/agent.js';
import { followRun } from '../agent/follow-run.js';
import { listProcessNames } from '../agent/host-signals.js';
import { defaultDataDir } from '../agent/paths.js';
import { loadOrCreateKeys } from '../identity/key-store.js';
import { NodeRuntime } from '../node/runtime.js';
import { APP_CSP, contentType, resolveAppUrl } from './app-protocol.js';
import { APP_SCHEME, GPU_WORKER_HOST, RENDERER_HOST, RENDERER_URL } from './channels.js';
import type { GpuWorkerClient } from './gpu-worker-client.js';
import { GpuWorkerStage } from './gpu-worker-stage.js';
import { openGpuWorker } from './gpu-worker-window.js';
import { denyAllPermissions, hardenContents } from './hardening.js';
import { registerAgentIpc } from './ipc.js';
import { linuxAutostartEntry, loginItemSettings, startedHidden } from './login-item.js';
import { PowerSignalReader } from './power-signals.js';
import { SafeStorageKeyStore } from './safe-key-store.js';
import { isTrustedRendererFrame } from './sender-check.js';
import { trayMenuTemplate } from './tray-menu.js';
import { trayIconFile, trayStateFor, type TrayState } from './tray-state.js';
import { wireUpdater } from './updater.js';
import { mainWindowOptions, webGpuSwitches } from './window-options.js';

/**
 * The desktop shell: lifecycle, single instance, tray, window, IPC, power signals, updates, login item.
 * Everything with logic lives in the small modules it imports (tested in test/electron with fakes); this file
 * only wires them to Electron.
 */

const logger = pino({ name: 'tributary-desktop' });
const appRoot = app.getAppPath();
const paths = {
  web: join(appRoot, 'dist', 'web'),
  gpuWorker: join(appRoot, 'dist', 'gpu-worker'),
  preload: join(appRoot, 'dist', 'preload', 'preload.cjs'),
  gpuWorkerPreload: join(appRoot, 'dist', 'preload', 'gpu-worker-preload.cjs'),
  assets: join(appRoot, 'assets'),
};
const POLL_SIGNALS_MS = 1_000;
const POLL_PROGRAMS_MS = 15_000;
const linuxAutostartFile = join(
  process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'),
  'autostart',
  'tributary.desktop',
);

for (const [name, value] of webGpuSwitches(process.platform)) app.commandLine.appendSwitch(name, value);
protocol.registerSchemesAsPrivileged([
  { scheme: APP_SCHEME, privileges: { standard: true, secure: true, supportFetchAPI: true } },
]);

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  void start().catch((error: unknown) => {
    logger.fatal({ err: error }, 'Tributary could not start');
    app.exit(1);
  });
}

function isOwnUrl(url: string): boolean {
  return resolveAppUrl(url, { [RENDERER_HOST]: paths.web, [GPU_WORKER_HOST]: paths.gpuWorker }) !== null;
}

function serveAppProtocol(): void {
  const roots = { [RENDERER_HOST]: paths.web, [GPU_WORKER_HOST]: paths.gpuWorker };
  protocol.handle(APP_SCHEME, async (request) => {
    const file = resolveAppUrl(request.url, roots);
    const body = file ? await readFile(file).catch(() => null) : null;
    if (!file || !body) return new Response('not found', { status: 404 });
    return new Response(body, {
      headers: {
        'Content-Type': contentType(file),
        'Content-Security-Policy': APP_CSP,
        'X-Content-Type-Options': 'nosniff',
      },
    });
  });
}

async function startAtLogin(): Promise<boolean> {
  if (process.platform !== 'linux') return app.getLoginItemSettings().openAtLogin;
  return readFile(linuxAutostartFile).then(
    () => true,
    () => false,
  );
}

async function setStartAtLogin(enabled: boolean): Promise<void> {
  if (process.platform !== 'linux') return app.setLoginItemSettings(loginItemSettings(enabled));
  if (!enabled) return rm(linuxAutostartFile, { force: true });
  await mkdir(join(linuxAutostartFile, '..'), { recursive: true });
  await writeFile(linuxAutostartFile, linuxAutostartEntry(process.env.APPIMAGE ?? process.execPath));
}

/**
 * Joins the training run the coordinator at TRIBUTARY_COORDINATOR runs, training on the GPU worker page and
 * gated and credited by the agent, whose dashboard follows the stage, the run's progress and its loss. The node key lives encrypted in the OS keychain. Without that variable the
 * app only shows the agent's state: there is no default network to join yet.
 */
function startNode(client: GpuWorkerClient, agent: Agent): NodeRuntime | null {
  const coordinatorUrl = process.env.TRIBUTARY_COORDINATOR;
  if (!coordinatorUrl) return null;
  const keys = loadOrCreateKeys(new SafeStorageKeyStore(safeStorage, join(defaultDataDir(), 'node-key.enc')));
  const node = new NodeRuntime({
    coordinatorUrl,
    keys,
    engine: 'gpu',
    gate: agent.gate,
    sink: agent.receipts,
    createStage: (_engine, spec) => GpuWorkerStage.create(client, spec),
    logger,
  });
  followRun(agent, node, coordinatorUrl, { onError: (message) => logger.debug(message) });
  node.start();
  return node;
}

async function start(): Promise<void> {
  let mainWindow: BrowserWindow | null = null;
  const showWindow = (): void => {
    if (!mainWindow) {
      mainWindow = new BrowserWindow(mainWindowOptions(paths.preload, join(paths.assets, 'icon-256.png')));
      mainWindow.once('ready-to-show', () => mainWindow?.show());
      mainWindow.on('closed', () => (mainWindow = null));
      void mainWindow.loadURL(RENDERER_URL);
    } else {
      if (mainWindow.isMinimized()) mainWindow.restore();
      mainWindow.show();
      mainWindow.focus();
    }
  };
  app.on('second-instance', showWindow);

  await app.whenReady();
  denyAllPermissions(session.defaultSession);
  app.on('web-contents-created', (_event, contents) =>
    hardenContents(contents, isOwnUrl, (url) => void shell.openExternal(url)),
  );
  serveAppProtocol();
  Menu.setApplicationMenu(null);

  const agent = await Agent.open({ dataDir: defaultDataDir(), hostSensors: true, logger });
  agent.start();

  registerAgentIpc(ipcMain, agent, isTrustedRendererFrame, () =>
    BrowserWindow.getAllWindows().map((w) => ({
      send: (channel, snapshot) => w.webContents.send(channel, snapshot),
      isTrusted: () => isTrustedRendererFrame(w.webContents.mainFrame),
    })),
  );

  const signals = new PowerSignalReader(powerMonitor, (inputs) => agent.setInputs(inputs));
  setInterval(() => agent.setInputs(signals.read()), POLL_SIGNALS_MS).unref();
  const pollPrograms = (): void =>
    void listProcessNames().then((runningPrograms) => agent.setInputs({ runningPrograms }));
  pollPrograms();
  setInterval(pollPrograms, POLL_PROGRAMS_MS).unref();

  const tray = new Tray(nativeImage.createEmpty());
  let trayState: TrayState = trayStateFor(null);
  let loginEnabled = await startAtLogin();
  let updateReady: string | null = null;
  const command = (c: Parameters<Agent['command']>[0]): void =>
    void agent.command(c).then((result) => {
      if (!result.ok) logger.warn({ errors: result.errors }, 'tray command refused');
    });
  const renderTray = (): void => {
    tray.setImage(
      nativeImage.createFromPath(join(paths.assets, trayIconFile(trayState.icon, process.platform))),
    );
    tray.setToolTip(trayState.tooltip);
    tray.setContextMenu(
      Menu.buildFromTemplate(
        trayMenuTemplate(
          trayState,
          { startAtLogin: loginEnabled, updateReady },
          {
            open: showWindow,
            pause: (duration) => command({ type: 'pause', duration }),
            resume: () => command({ type: 'resume' }),
            setStartAtLogin: (enabled) =>
              void setStartAtLogin(enabled).then(() => {
                loginEnabled = enabled;
                renderTray();
              }),
            quit: () => app.quit(),
          },
        ),
      ),
    );
  };
  tray.on('click', showWindow);
  agent.onSnapshot((snapshot) => {
    const next = trayStateFor(snapshot);
    if (
      next.icon !== trayState.icon ||
      next.tooltip !== trayState.tooltip ||
      next.canResume !== trayState.canResume
    ) {
      trayState = next;
      renderTray();
    }
  });
  trayState = trayStateFor(agent.snapshot());
  renderTray();

  let node: NodeRuntime | null = null;
  void openGpuWorker(paths.gpuWorkerPreload)
    .then(async ({ client }) => {
      client.onEvent((event) => logger.info({ event }, 'GPU worker'));
      const { adapter } = await client.request({ type: 'acquire' });
      logger.info({ adapter }, 'GPU worker acquired a WebGPU device');
      node = startNode(client, agent);
    })
    .catch((error: unknown) => {
      logger.error({ err: error }, 'GPU worker failed');
      trayState = trayStateFor(null, `the GPU is not available (${(error as Error).message})`);
      renderTray();
    });

  if (app.isPackaged) {
    wireUpdater(electronUpdater.autoUpdater, {
      onReady: (version) => {
        updateReady = version;
        renderTray();
      },
      log: (message) => logger.warn(message),
      setInterval: (callback, ms) => setInterval(callback, ms),
    });
  }

  // Closing the window leaves Tributary in the tray; only Quit ends it.
  app.on('window-all-closed', () => undefined);
  let stopped = false;
  app.on('before-quit', (event) => {
    if (stopped) return;
    // The node finishes or hands back its micro-batch, then the agent flushes the ledger; only then exit.
    event.preventDefault();
    void Promise.resolve(node?.stop())
      .then(() => agent.stop())
      .finally(() => {
        stopped = true;
        signals.dispose();
        app.quit();
      });
  });

  if (!startedHidden(process.argv)) showWindow();
}
