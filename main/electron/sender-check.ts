import { RENDERER_ORIGIN } from './channels.js';

/** The parts of Electron's WebFrameMain a sender check reads. */
export interface FrameLike {
  url: string;
  parent: unknown;
}

/**
 * True only for the top frame of a page of our own renderer bundle. Every IPC handler asks this first:
 * a frame that navigated elsewhere, an iframe, or a page from any other origin gets nothing.
 */
export function isTrustedRendererFrame(
  frame: FrameLike | null | undefined,
  origin = RENDERER_ORIGIN,
): boolean {
  if (!frame || frame.parent !== null) return false;
  let url: URL;
  try {
    url = new URL(frame.url);
  } catch {
    return false;
  }
  // URL.origin is "null" for custom schemes, so compare scheme and host directly.
  return `${url.protocol}//${url.host}` === origin;
}
