import { useMemo } from 'react';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { Card } from '../components/Card.js';
import { Chart } from '../components/Chart.js';
import { Meter, type MeterProps } from '../components/Meter.js';
import { PauseControl } from '../components/PauseControl.js';
import { formatCredits } from '../../shared/dashboard/credits.js';
import { useNow } from '../components/use-now.js';
import { formatCelsius, formatInteger, formatPercent, formatStage, STATE_LABEL } from '../format.js';

interface Props {
  snapshot: AgentSnapshot;
  send: (command: AgentCommand) => Promise<CommandResult>;
}

/** Warm within 10 °C of the limit, hot at or above it. */
function temperatureMeter(snapshot: AgentSnapshot): MeterProps {
  const limit = snapshot.settings.gpuTempLimitC;
  const { gpuTempC, source, thermalState } = snapshot.telemetry;
  // The bar spans 30 °C to 10 °C past the limit, so the limit mark sits near the right end.
  const low = 30;
  const high = limit + 10;
  const limitText = `limit ${formatCelsius(limit)}`;
  if (gpuTempC === null) {
    const osState =
      thermalState === 'unknown' ? '' : ` The system reports its thermal state as ${thermalState}.`;
    return {
      label: 'GPU temperature',
      fraction: null,
      valueText: `not available (${limitText})`,
      detail: `No temperature reading from this GPU (source: ${source}).${osState}`,
    };
  }
  return {
    label: 'GPU temperature',
    fraction: (gpuTempC - low) / (high - low),
    valueText: `${formatCelsius(gpuTempC)} of ${limitText}`,
    tone: gpuTempC >= limit ? 'bad' : gpuTempC >= limit - 10 ? 'warn' : 'ok',
    markAt: (limit - low) / (high - low),
    markLabel: limitText,
    detail: gpuTempC >= limit ? 'At the limit: work slows down or stops until the GPU cools.' : undefined,
  };
}

function loadMeter(snapshot: AgentSnapshot): MeterProps {
  const util = snapshot.telemetry.gpuUtilPct;
  const cap = snapshot.settings.dutyCyclePct;
  const duty = snapshot.dutyCyclePct;
  const dutyText = `Tributary uses the GPU ${formatPercent(duty)} of the time (your cap: ${formatPercent(cap)})`;
  return {
    label: 'GPU load',
    fraction: (util ?? duty) / 100,
    valueText: util === null ? `${formatPercent(duty)} duty cycle` : formatPercent(util),
    detail: dutyText,
    markAt: cap < 100 ? cap / 100 : undefined,
    markLabel: `your cap: ${formatPercent(cap)}`,
  };
}

/** Device memory in use, with the contributor's cap marked; null when the GPU does not report it. */
function memoryMeter(snapshot: AgentSnapshot): MeterProps | null {
  const { vramUsedMb, vramTotalMb } = snapshot.telemetry;
  if (vramUsedMb === null || vramTotalMb === null || vramTotalMb <= 0) return null;
  const cap = snapshot.settings.vramCapMb;
  const gb = (mb: number): string => `${(mb / 1024).toFixed(1)} GB`;
  return {
    label: 'GPU memory',
    fraction: vramUsedMb / vramTotalMb,
    valueText: `${gb(vramUsedMb)} of ${gb(vramTotalMb)}`,
    markAt: cap === null ? undefined : cap / vramTotalMb,
    markLabel: cap === null ? undefined : `your cap: ${gb(cap)}`,
    detail: cap === null ? undefined : `Tributary keeps its stage under your ${gb(cap)} cap.`,
  };
}

function gpuName(snapshot: AgentSnapshot): string | null {
  const gpu = snapshot.inventory?.gpus[0];
  if (!gpu) return null;
  const vendorInModel = gpu.model.toLowerCase().startsWith(gpu.vendor.toLowerCase());
  return gpu.vendor && !vendorInModel ? `${gpu.vendor} ${gpu.model}` : gpu.model;
}

function hostOf(url: string | null): string {
  if (url === null) return 'none';
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** Where this node stands with its network, the countdown to the next attempt, and both paces. */
function NetworkCard({ snapshot }: { snapshot: AgentSnapshot }) {
  const { network, rates } = snapshot;
  const now = useNow(network.retryAt !== null);
  const retryIn =
    network.retryAt === null ? null : Math.max(0, Math.ceil((Date.parse(network.retryAt) - now) / 1000));
  return (
    <Card title="Network">
      <p className="network-host" data-testid="network-host">
        {hostOf(network.url)}
      </p>
      <p data-testid="network-detail">{network.detail}</p>
      {retryIn !== null ? <p className="muted">Next attempt in {retryIn} s.</p> : null}
      <dl className="rates">
        <div>
          <dt>This computer</dt>
          <dd data-testid="rate-tokens">
            {rates.tokensPerSecond === null ? 'measuring…' : `${rates.tokensPerSecond.toFixed(1)} tokens/s`}
          </dd>
        </div>
        <div>
          <dt>Earning</dt>
          <dd data-testid="rate-credits">
            {rates.flopsPerHour === null ? 'measuring…' : `${formatCredits(rates.flopsPerHour)} per hour`}
          </dd>
        </div>
        <div>
          <dt>Whole network</dt>
          <dd>
            {network.tokensPerSecond === null
              ? 'not reported yet'
              : `${formatInteger(network.tokensPerSecond)} tokens/s`}
          </dd>
        </div>
      </dl>
    </Card>
  );
}

export function Dashboard({ snapshot, send }: Props) {
  const loss = useMemo(
    () => ({
      // Steps are numbered from 1 where a person reads them (the protocol counts from 0).
      xs: snapshot.loss.map((p) => p.step + 1),
      ys: snapshot.loss.map((p) => p.loss),
      validation: snapshot.loss.some((p) => p.validation !== undefined)
        ? snapshot.loss.map((p) => p.validation ?? null)
        : undefined,
    }),
    [snapshot.loss],
  );
  const lastLoss = snapshot.loss.at(-1);
  const lastValidation = snapshot.loss.findLast((p) => p.validation !== undefined);
  const { progress, stage } = snapshot;
  const memory = memoryMeter(snapshot);
  const name = gpuName(snapshot);

  return (
    <div className="view dashboard">
      <Card title="Status" className={`status status-${snapshot.state}`}>
        <p className="state-line">
          <span className={`state-badge state-${snapshot.state}`} data-testid="state">
            {STATE_LABEL[snapshot.state]}
          </span>
          <span className="reason" data-testid="reason">
            {snapshot.reason}
          </span>
        </p>
        <PauseControl snapshot={snapshot} send={send} />
      </Card>

      <NetworkCard snapshot={snapshot} />

      <Card title="GPU">
        {name ? (
          <p className="gpu-name" data-testid="gpu-name">
            {name}
          </p>
        ) : null}
        <Meter {...temperatureMeter(snapshot)} />
        <Meter {...loadMeter(snapshot)} />
        {memory ? <Meter {...memory} /> : null}
      </Card>

      <Card title="Training">
        <p className="stage" data-testid="stage">
          {stage ? formatStage(stage) : 'No stage assigned yet'}
        </p>
        {progress ? (
          <>
            <Meter
              label={`Current step (${formatInteger(progress.step)})`}
              fraction={progress.stepFraction}
              valueText={formatPercent(progress.stepFraction * 100)}
            />
            {progress.totalSteps ? (
              <Meter
                label="Training run"
                fraction={progress.step / progress.totalSteps}
                valueText={`step ${formatInteger(progress.step)} of ${formatInteger(progress.totalSteps)}`}
              />
            ) : (
              <p className="muted">The run has no fixed length.</p>
            )}
          </>
        ) : (
          <p className="muted">No step in progress.</p>
        )}
      </Card>

      <Card title="Network loss" className="wide">
        <Chart
          label="Network loss by step"
          summary={
            lastLoss
              ? `Loss ${lastLoss.loss.toFixed(3)} at step ${formatInteger(lastLoss.step + 1)}${lossTrend(snapshot.loss)}${
                  lastValidation
                    ? ` Held-out validation loss (dashed) ${lastValidation.validation!.toFixed(3)} at step ${formatInteger(lastValidation.step + 1)}.`
                    : ''
                }`
              : 'The network has not reported a loss yet.'
          }
          x={{ kind: 'number', values: loss.xs }}
          ys={loss.ys}
          ys2={loss.validation}
          series2Label="validation loss"
          seriesLabel="loss"
          formatY={(v) => v.toFixed(2)}
        />
      </Card>
    </div>
  );
}

function lossTrend(points: AgentSnapshot['loss']): string {
  const first = points[0];
  const last = points.at(-1);
  if (!first || !last || points.length < 2) return '.';
  const direction = last.loss <= first.loss ? 'down' : 'up';
  return `, ${direction} from ${first.loss.toFixed(3)} at step ${formatInteger(first.step + 1)}.`;
}
