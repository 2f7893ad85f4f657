/**
 * The bytes a node signs to prove it holds its key: a domain tag, the coordinator's fresh nonce and both
 * public keys, so a signature cannot be replayed to another coordinator or for another node.
 */
export function authChallengeBytes(nonceBase64: string, coordinatorKey: string, nodeId: string): Uint8Array {
  return new TextEncoder().encode(`tributary-auth-v1\n${nonceBase64}\n${coordinatorKey}\n${nodeId}`);
}
