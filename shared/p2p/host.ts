import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2';
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys';
import { dcutr } from '@libp2p/dcutr';
import { identify } from '@libp2p/identify';
import { FaultTolerance, type PeerId } from '@libp2p/interface';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import type { Multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';

/** Whether a multiaddr goes through a circuit relay (`.../p2p-circuit/...`). */
export const isCircuit = (addr: string): boolean => addr.includes('/p2p-circuit');

/** Where a host listens unless told: TCP and WebSockets on 127.0.0.1, free ports. */
export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0/ws'];

export interface P2pHostOptions {
  /** The node's ed25519 private key seed (32 bytes): its libp2p peer id is its Tributary identity. */
  seed: Uint8Array;
  /** Multiaddrs to listen on; default TCP and WebSockets on 127.0.0.1, free ports. */
  listen?: string[];
  /** Serve circuit relay v2 (the coordinator may), for peers that cannot be reached directly. */
  relayServer?: boolean;
  /** Only these peers may connect in (the coordinator's relay serves its own nodes, not the world). */
  allowInbound?: (peer: PeerId) => boolean;
  /** Rewrites the addresses announced to peers (a listener behind a proxy announces the proxy's). */
  announceFilter?: (addrs: Multiaddr[]) => Multiaddr[];
}

/**
 * A libp2p host for Tributary (a node's, or the coordinator's relay): TCP and WebSockets, Noise, Yamux,
 * identify, circuit relay v2 (client, and server when asked) and DCUtR, composed from js-libp2p's own
 * services.
 */
export async function startP2pHost(options: P2pHostOptions): Promise<Libp2p> {
  const privateKey = await generateKeyPairFromSeed('Ed25519', options.seed);
  // Relayed tensors are the point of the relay here, so its connections get no default data or time cap.
  const relay = options.relayServer
    ? { relay: circuitRelayServer({ reservations: { applyDefaultLimit: false } }) }
    : {};
  const listen = options.listen ?? DEFAULT_LISTEN;
  // A relay's reservation beside direct listeners is a fallback: the host starts without it if refused.
  const fallback = listen.some(isCircuit) && !listen.every(isCircuit);
  return createLibp2p({
    privateKey,
    addresses: {
      listen,
      ...(options.announceFilter ? { announceFilter: options.announceFilter } : {}),
    },
    transports: [tcp(), webSockets(), circuitRelayTransport()],
    ...(fallback ? { transportManager: { faultTolerance: FaultTolerance.NO_FATAL } } : {}),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), dcutr: dcutr(), ...relay },
    ...(options.allowInbound
      ? {
          connectionGater: { denyInboundEncryptedConnection: (peer: PeerId) => !options.allowInbound!(peer) },
        }
      : {}),
  });
}
