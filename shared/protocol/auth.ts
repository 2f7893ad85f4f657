/**
 * The bytes a node signs to prove it holds its key: a domain tag, the coordinator's fresh nonce and both
 * public keys, so a signature cannot be replayed to another coordinator or for another node.
 */
/**
 * The bytes a coordinator signs to prove it holds the key it shows (a node pins that key): a domain tag of
 * its own, the node's fresh nonce, the coordinator's nonce, its key and the node's, so a proof cannot be
 * replayed to another node, another connection, or passed off as a node's signature.
 */
export function coordinatorProofBytes(
  nodeNonceBase64: string,
  coordinatorNonceBase64: string,
  coordinatorKey: string,
  nodeId: string,
): Uint8Array {
  return new TextEncoder().encode(
    `tributary-coordinator-v1\n${nodeNonceBase64}\n${coordinatorNonceBase64}\n${coordinatorKey}\n${nodeId}`,
  );
}

export function authChallengeBytes(nonceBase64: string, coordinatorKey: string, nodeId: string): Uint8Array {
  return new TextEncoder().encode(`tributary-auth-v1\n${nonceBase64}\n${coordinatorKey}\n${nodeId}`);
}
