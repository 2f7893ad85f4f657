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
import type { AgentCommand } from '../../shared/dashboard/contract.js';
import { listProcessNames } from '../agent/host-signals.js';
import { fileTuningStore } from '../gpu-host/tuning-store.js';
import { ContributorHost } from '../host/contributor-host.js';
import { loadOrCreateKeys } from '../identity/key-store.js';
import { APP_CSP, contentType, resolveAppUrl } from './app-protocol.js';
import { APP_SCHEME, GPU_WORKER_HOST, RENDERER_HOST, RENDERER_URL } from './channels.js';
import { GpuWorkerStage } from './gpu-worker-stage.js';
import { GpuWorkerSupervisor } from './gpu-worker-supervisor.js';
import { openGpuWorker } from './gpu-worker-window.js';
import { denyAllPermissions, hardenContents } from './hardening.js';
import { registerAgentIpc } from './ipc.js';
import { wireLifecycle } from './lifecycle.js';
import { linuxAutostartEntry, loginItemSettings, startedHidden } from './login-item.js';
import { PowerSignalReader } from './power-signals.js';
import { RotatingLog } from './rotating-log.js';
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

/** The per-user app-data folder (TRIBUTARY_HOME overrides it for development and tests). */
const dataDir = process.env.TRIBUTARY_HOME ?? app.getPath('userData');
const logFile = new RotatingLog({ dir: join(dataDir, 'logs') });
const logger = pino(
  { name: 'tributary-desktop' },
  pino.multistream([{ stream: process.stdout }, { stream: logFile }]),
);
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

async function start(): Promise<void> {
  let mainWindow: BrowserWindow | null = null;
  const showWindow = (): void => {
    if (!mainWindow) {
      mainWindow = new BrowserWindow(
        mainWindowOptions(paths.preload, join(paths.assets, 'icons', '256x256.png')),
      );
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

  const gpuWorker = new GpuWorkerSupervisor({
    open: async () => {
      const { client } = await openGpuWorker(paths.gpuWorkerPreload);
      client.onEvent((event) => logger.info({ event }, 'GPU worker'));
      const { adapter } = await client.request({ type: 'acquire' });
      logger.info({ adapter }, 'GPU worker acquired a WebGPU device');
      return client;
    },
    onProblem: (problem) => {
      if (problem) logger.warn(problem);
      host.agent.setGpuProblem(problem);
    },
  });
  const host = await ContributorHost.start({
    dataDir,
    keys: loadOrCreateKeys(new SafeStorageKeyStore(safeStorage, join(dataDir, 'node-key.enc'))),
    engine: 'gpu',
    logger,
    pollHost: false,
    hostSensors: true,
    dashboard: null,
    createStage: async (_engine, spec) => {
      const client = gpuWorker.current;
      if (!client) throw new Error('the GPU worker is restarting');
      try {
        return await GpuWorkerStage.create(client, spec, {
          store: fileTuningStore(join(dataDir, 'gpu-tuning.json')),
          log: (line) => logger.info(line),
        });
      } catch (error) {
        gpuWorker.fail((error as Error).message);
        throw error;
      }
    },
  });
  const agent = host.agent;
  const lifecycle = wireLifecycle(
    powerMonitor,
    host,
    () => app.quit(),
    (message) => logger.info(message),
  );
  app.on('browser-window-created', (_event, window) => window.on('session-end', lifecycle.sessionEnded));
  agent.setGpuProblem('Starting the GPU worker');
  gpuWorker.start();

  registerAgentIpc(ipcMain, agent, isTrustedRendererFrame);

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
  const command = (c: AgentCommand): void =>
    void agent.command(c).then((result) => {
      if (!result.ok) logger.warn({ errors: result.errors }, 'tray command refused');
    });
  const renderTray = (): void => {
    tray.setImage(
      nativeImage.createFromPath(join(paths.assets, trayIconFile(trayState.icon, process.platform))),
    );
    tray.setToolTip(trayState.tooltip);
    logger.info({ tray: trayState.tooltip, icon: trayState.icon }, 'tray');
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
              command({ type: 'updateSettings', patch: { startAtLogin: enabled } }),
            quit: () => app.quit(),
          },
        ),
      ),
    );
  };
  tray.on('click', showWindow);
  agent.onSnapshot((snapshot) => {
    // The setting (first-run screen, Settings, tray) is the truth; the OS entry follows it.
    if (snapshot.settings.startAtLogin !== loginEnabled) {
      loginEnabled = snapshot.settings.startAtLogin;
      void setStartAtLogin(loginEnabled).then(renderTray, (error: unknown) =>
        logger.warn({ err: error }, 'could not change the start-at-login entry'),
      );
    }
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
    void host.stop().finally(() => {
      stopped = true;
      gpuWorker.stop();
      signals.dispose();
      logFile.close();
      app.quit();
    });
  });

  if (!startedHidden(process.argv)) showWindow();
}
