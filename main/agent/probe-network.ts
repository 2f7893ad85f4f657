import { WebSocket } from 'ws';
import type { NetworkProbe } from '../../shared/dashboard/contract.js';
import { challengeSchema, type NodeMessage, type Outgoing } from '../../shared/protocol/messages.js';
import { encodeMessage } from '../../shared/protocol/wire.js';

const PROBE_TIMEOUT_MS = 8_000;

export type ProbeResult = { ok: true; probe: NetworkProbe } | { ok: false; error: string };

/**
 * Asks a coordinator who it is without joining: it answers a hello with a challenge carrying its ed25519 key
 * and run id; the probe hangs up there, before proving anything. The person sees the key and pins it by
 * accepting; the node then refuses any other key.
 */
export function probeNetwork(rawUrl: string, nodeId: string): Promise<ProbeResult> {
  let url: URL;
  try {
    url = new URL(rawUrl.trim());
  } catch {
    return Promise.resolve({ ok: false, error: `url: "${rawUrl}" is not an address (try ws://host:port)` });
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    return Promise.resolve({ ok: false, error: 'url: a network address starts with ws:// or wss://' });
  }
  return new Promise((resolve) => {
    const socket = new WebSocket(url, { handshakeTimeout: PROBE_TIMEOUT_MS, maxPayload: 64 * 1024 });
    const done = (result: ProbeResult): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.terminate();
      resolve(result);
    };
    const timer = setTimeout(
      () => done({ ok: false, error: `url: ${url.host} did not answer within ${PROBE_TIMEOUT_MS / 1000} s` }),
      PROBE_TIMEOUT_MS,
    );
    socket.on('open', () => {
      const hello: Outgoing<NodeMessage> = {
        type: 'hello',
        nodeId,
        client: 'tributary-probe/0.1',
        engine: 'gpu',
        receiptCursor: 0,
      };
      for (const part of encodeMessage(0, hello, [])) socket.send(part);
    });
    socket.on('message', (data, isBinary) => {
      const parsed = isBinary ? null : challengeSchema.safeParse(parseJson(data.toString()));
      if (!parsed?.success) {
        return done({ ok: false, error: `url: ${url.host} does not speak the Tributary protocol` });
      }
      done({
        ok: true,
        probe: {
          url: url.toString().replace(/\/$/, ''),
          coordinatorKey: parsed.data.coordinatorKey,
          runId: parsed.data.runId,
        },
      });
    });
    socket.on('error', (err) => done({ ok: false, error: `url: cannot reach ${url.host} (${err.message})` }));
    socket.on('close', () => done({ ok: false, error: `url: ${url.host} closed the connection` }));
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}
