import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../main/agent/agent.js';
import { defaultSettings, type AgentSettings } from '../../shared/dashboard/settings.js';
import { openQuietAgent } from '../helpers/agent.js';

describe('settings saved from the dashboard', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tributary-settings-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const open = (overrides: Partial<AgentSettings>): Promise<Agent> =>
    openQuietAgent({
      dataDir: dir,
      overrides,
    });
  const stored = (): AgentSettings =>
    JSON.parse(readFileSync(join(dir, 'settings.json'), 'utf8')) as AgentSettings;

  it('keep one-run flag overrides (--run-when, --dashboard-port) out of settings.json', async () => {
    writeFileSync(join(dir, 'settings.json'), JSON.stringify({ gpuTempLimitC: 70 }));
    const agent = await open({ runWhen: 'always', dashboardPort: 0 });
    try {
      const effective = agent.snapshot().settings;
      expect(effective).toMatchObject({ runWhen: 'always', dashboardPort: 0, gpuTempLimitC: 70 });
      // The dashboard's form sends every field, overridden ones at their flag values.
      expect(
        await agent.command({ type: 'updateSettings', patch: { ...effective, dutyCyclePct: 40 } }),
      ).toEqual({ ok: true });
      expect(stored()).toEqual({ ...defaultSettings, gpuTempLimitC: 70, dutyCyclePct: 40 });
      expect(agent.snapshot().settings).toMatchObject({
        runWhen: 'always',
        dashboardPort: 0,
        dutyCyclePct: 40,
      });
    } finally {
      await agent.stop();
    }
  });

  it('store a field the person changed, replacing that flag override', async () => {
    const agent = await open({ runWhen: 'always' });
    try {
      const effective = agent.snapshot().settings;
      await agent.command({
        type: 'updateSettings',
        patch: { ...effective, runWhen: 'idle', idleAfterSeconds: 60 },
      });
      expect(stored()).toMatchObject({ runWhen: 'idle', idleAfterSeconds: 60 });
      expect(agent.snapshot().settings.runWhen).toBe('idle');
    } finally {
      await agent.stop();
    }
  });

  it('refuse overrides that make the settings invalid', async () => {
    await expect(open({ dutyCyclePct: 500 })).rejects.toThrow(/dutyCyclePct/);
  });
});
