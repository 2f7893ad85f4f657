import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { repoRoot } from '../helpers/page-server.js';

const AXE_SOURCE = readFileSync(resolve(repoRoot, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/**
 * axe-core's WCAG 2.1 A and AA rules over the page as it is now, one line per violation with up to three of
 * the elements it found. Injected through the DevTools protocol, which the page's strict CSP does not block.
 */
export async function axeViolations(page: Page): Promise<string[]> {
  await page.evaluate(AXE_SOURCE);
  return page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run: (...args: unknown[]) => Promise<AxeResult> } }).axe;
    interface AxeResult {
      violations: { id: string; help: string; nodes: { target: string[]; failureSummary?: string }[] }[];
    }
    const result = await axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    });
    return result.violations.map(
      (v) =>
        `${v.id} (${v.help}): ${v.nodes
          .slice(0, 3)
          .map((n) => `${n.target.join(' ')} ${n.failureSummary ?? ''}`)
          .join(' | ')}`,
    );
  });
}

/** WCAG's contrast ratio of two CSS rgb()/rgba() colours (alpha ignored: both are opaque here). */
export function contrastRatio(a: string, b: string): number {
  const luminance = (css: string): number => {
    const [r, g, bl] = (css.match(/[\d.]+/g) ?? []).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r! + 0.7152 * g! + 0.0722 * bl!;
  };
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi! + 0.05) / (lo! + 0.05);
}
