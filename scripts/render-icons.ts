/**
 * Renders assets/*.svg to the PNGs the app and the installers use, with headless Chromium.
 * Run after changing an SVG: `node --import tsx scripts/render-icons.ts`; commit the PNGs it writes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { launchChromium } from '../test/helpers/chromium.js';

const assets = resolve(import.meta.dirname, '..', 'assets');

/** Output name -> [source SVG, size in px]. */
function targets(): [string, string, number][] {
  const list: [string, string, number][] = [];
  for (const size of [16, 32, 48, 64, 128, 256, 512, 1024])
    list.push([`icons/${size}x${size}.png`, 'icon.svg', size]);
  for (const state of ['running', 'paused', 'waiting', 'error']) {
    const svg = `tray-${state}.svg`;
    list.push(
      [`tray-${state}-16.png`, svg, 16],
      [`tray-${state}-16@2x.png`, svg, 32],
      [`tray-${state}-32.png`, svg, 32],
    );
  }
  return list;
}

const browser = await launchChromium();
try {
  const page = await browser.newPage({ deviceScaleFactor: 1 });
  for (const [name, svg, size] of targets()) {
    const data = (await readFile(join(assets, svg))).toString('base64');
    await page.setViewportSize({ width: size, height: size });
    await page.setContent(
      `<html><body style="margin:0;background:transparent">` +
        `<img src="data:image/svg+xml;base64,${data}" width="${size}" height="${size}" style="display:block"></body></html>`,
    );
    await page.locator('img').evaluate((img: HTMLImageElement) => img.decode());
    const png = await page.screenshot({
      omitBackground: true,
      clip: { x: 0, y: 0, width: size, height: size },
    });
    await writeFile(join(assets, name), png);
    console.log(`assets/${name} (${size}x${size})`);
  }
} finally {
  await browser.close();
}
