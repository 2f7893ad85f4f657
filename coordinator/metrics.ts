import { Counter, Gauge, Registry } from 'prom-client';

/** The coordinator's Prometheus metrics, on a registry of its own so several coordinators can share a process. */
export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly step = new Gauge({
    name: 'tributary_step',
    help: 'Global steps committed',
    registers: [this.registry],
  });
  readonly loss = new Gauge({
    name: 'tributary_loss',
    help: 'Mean training loss of the last step',
    registers: [this.registry],
  });
  readonly validationLoss = new Gauge({
    name: 'tributary_validation_loss',
    help: 'Mean loss on the held-out validation micro-batches at the last evaluation',
    registers: [this.registry],
  });
  readonly tokensPerSecond = new Gauge({
    name: 'tributary_tokens_per_second',
    help: 'Training tokens per second since start',
    registers: [this.registry],
  });
  readonly nodes = new Gauge({
    name: 'tributary_nodes',
    help: 'Authenticated connections',
    registers: [this.registry],
  });
  readonly stageNodes = new Gauge({
    name: 'tributary_stage_nodes',
    help: 'Nodes training each stage',
    labelNames: ['stage'],
    registers: [this.registry],
  });
  readonly relayedBytes = new Counter({
    name: 'tributary_relayed_bytes_total',
    help: 'Activation and gradient bytes relayed between stages',
    registers: [this.registry],
  });
  readonly receipts = new Counter({
    name: 'tributary_receipts_total',
    help: 'Work receipts issued',
    registers: [this.registry],
  });
  readonly replays = new Counter({
    name: 'tributary_step_replays_total',
    help: 'Step attempts abandoned and replayed',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly overflows = new Counter({
    name: 'tributary_overflows_total',
    help: 'Mixed-precision overflows of a scaled backward (each halves the loss scale and replays the step)',
    registers: [this.registry],
  });
  readonly reroutes = new Counter({
    name: 'tributary_reroutes_total',
    help: 'Nodes lost mid-step whose micro-batches a replica redid (no replay)',
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'tributary_rejected_messages_total',
    help: 'Messages refused as invalid',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly dropped = new Counter({
    name: 'tributary_dropped_peers_total',
    help: 'Peers dropped for silence or errors',
    registers: [this.registry],
  });
  readonly relayedPairs = new Counter({
    name: 'tributary_relayed_pairs_total',
    help: 'Pairs of nodes whose tensors go through the coordinator: one could not reach the other (unreachable), or reported a tensor of the other bad and neither was proven wrong (dispute)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly verifications = new Counter({
    name: 'tributary_verifications_total',
    help: 'Sampled forwards (agreed: units) and backwards recomputed by a second replica, by verdict and part',
    labelNames: ['verdict', 'part'],
    registers: [this.registry],
  });
}
