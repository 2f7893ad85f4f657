import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { MenuItemConstructorOptions } from 'electron';
import { describe, expect, it } from 'vitest';
import { trayMenuTemplate, type TrayActions } from '../../main/electron/tray-menu.js';
import { trayIconFile, trayStateFor, type TrayIcon } from '../../main/electron/tray-state.js';
import { repoRoot } from '../helpers/page-server.js';
import { sampleSnapshot } from '../e2e/renderer-fixtures/snapshot.js';

describe('tray state', () => {
  it('shows the agent state as the icon and its reason as the tooltip', () => {
    const running = trayStateFor(sampleSnapshot());
    expect(running).toMatchObject({ icon: 'running', canResume: false });
    expect(running.tooltip).toMatch(
      /^Tributary: Training stage 3 of 8 \(blocks 6–8\) at 85%: you have been away/,
    );

    const paused = trayStateFor({
      ...sampleSnapshot(),
      state: 'paused',
      reasonCode: 'user-paused',
      reason: 'Paused by you.',
    });
    expect(paused).toEqual({ icon: 'paused', tooltip: 'Tributary: Paused by you.', canResume: true });

    const onBattery = trayStateFor({
      ...sampleSnapshot(),
      state: 'paused',
      reasonCode: 'on-battery',
      reason: 'On battery.',
    });
    expect(onBattery.canResume).toBe(false);

    expect(trayStateFor({ ...sampleSnapshot(), state: 'waiting' }).icon).toBe('waiting');
    expect(trayStateFor(null).icon).toBe('waiting');
    expect(trayStateFor(sampleSnapshot(), 'the GPU is not available').icon).toBe('error');
  });

  it('keeps tooltips within what every OS shows', () => {
    const long = trayStateFor({ ...sampleSnapshot(), reason: 'x'.repeat(500) });
    expect(long.tooltip.length).toBeLessThanOrEqual(120);
    expect(long.tooltip.endsWith('…')).toBe(true);
  });

  it('has a committed PNG for every state on every platform', () => {
    for (const icon of ['running', 'paused', 'waiting', 'error'] as TrayIcon[]) {
      for (const platform of ['darwin', 'win32', 'linux'] as NodeJS.Platform[]) {
        const file = join(repoRoot, 'assets', trayIconFile(icon, platform));
        expect(existsSync(file), file).toBe(true);
      }
      expect(existsSync(join(repoRoot, 'assets', `tray-${icon}-16@2x.png`))).toBe(true);
    }
  });
});

describe('tray menu', () => {
  const record = () => {
    const calls: string[] = [];
    const actions: TrayActions = {
      open: () => calls.push('open'),
      pause: (d) => calls.push(`pause:${d}`),
      resume: () => calls.push('resume'),
      setStartAtLogin: (on) => calls.push(`login:${on}`),
      quit: () => calls.push('quit'),
    };
    return { calls, actions };
  };
  const click = (items: MenuItemConstructorOptions[], label: string, checked?: boolean) => {
    const item = items.find((i) => i.label === label);
    if (!item?.click) throw new Error(`no menu item "${label}"`);
    (item.click as (item: { checked: boolean }) => void)({ checked: checked ?? false });
  };

  it('offers the pauses while running, and they reach the agent', () => {
    const { calls, actions } = record();
    const items = trayMenuTemplate(
      trayStateFor(sampleSnapshot()),
      { startAtLogin: false, updateReady: null },
      actions,
    );
    expect(items[0]).toMatchObject({
      enabled: false,
      label: expect.stringMatching(/^Training stage 3 of 8/),
    });
    click(items, 'Pause for 1 hour');
    click(items, 'Pause until tomorrow');
    click(items, 'Start at login', true);
    expect(calls).toEqual(['pause:1h', 'pause:tomorrow', 'login:true']);
    expect(items.some((i) => i.label === 'Resume')).toBe(false);
  });

  it('offers resume after a user pause, and the update once it is ready', () => {
    const { calls, actions } = record();
    const paused = trayStateFor({
      ...sampleSnapshot(),
      state: 'paused',
      reasonCode: 'user-paused',
      reason: 'Paused by you.',
    });
    const items = trayMenuTemplate(paused, { startAtLogin: true, updateReady: '0.2.0' }, actions);
    click(items, 'Resume');
    click(items, 'Quit and install update 0.2.0');
    expect(calls).toEqual(['resume', 'quit']);
    expect(items.find((i) => i.label === 'Start at login')?.checked).toBe(true);
    expect(items.some((i) => i.label === 'Pause for 1 hour' || i.label === 'Pause until I resume')).toBe(
      false,
    );
  });
});
