import { useState, type FormEvent } from 'react';
import type {
  AgentCommand,
  AgentSnapshot,
  CommandResult,
  NetworkProbe,
} from '../../shared/dashboard/contract.js';
import { Card } from '../components/Card.js';
import { CodeInput, ErrorAlert } from '../components/CodeInput.js';
import { NetworkChooser } from '../components/NetworkChooser.js';
import { payoutAddressProblem } from './Wallet.js';

interface Props {
  snapshot: AgentSnapshot;
  send: (command: AgentCommand) => Promise<CommandResult>;
}

/**
 * The first start: one screen, three choices (a network, a payout address, start at login), and nothing
 * runs until the person accepts. Limits keep their defaults and live in Settings.
 */
export function FirstRun({ snapshot, send }: Props) {
  const { settings } = snapshot;
  const [probe, setProbe] = useState<NetworkProbe | null>(null);
  const [payout, setPayout] = useState(snapshot.wallet.payoutAddress ?? '');
  const [payoutError, setPayoutError] = useState<string | null>(null);
  const [startAtLogin, setStartAtLogin] = useState(true);
  const [errors, setErrors] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const idleMinutes = Math.round(settings.idleAfterSeconds / 60);

  const accept = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    if (!probe) {
      setErrors(['Check a network first: its key is what you accept.']);
      return;
    }
    const address = payout.trim();
    const problem = payoutAddressProblem(address);
    setPayoutError(problem);
    if (problem) return;
    setBusy(true);
    const result = await send({
      type: 'joinNetwork',
      network: { url: probe.url, coordinatorKey: probe.coordinatorKey },
      ...(address ? { payoutAddress: address } : {}),
      startAtLogin,
    });
    setBusy(false);
    if (result.ok) return;
    const payoutErrors = result.errors.filter((e) => e.startsWith('payoutAddress: '));
    setPayoutError(payoutErrors.length > 0 ? payoutErrors.map((e) => e.slice(15)).join(' ') : null);
    setErrors(result.errors.filter((e) => !e.startsWith('payoutAddress: ')));
  };

  return (
    <form className="view first-run" onSubmit={(e) => void accept(e)} noValidate>
      <Card title="What Tributary does" className="wide">
        <p>
          Tributary lends this computer’s GPU to an open AI training network while you are not using it. It
          trains one slice of a shared model and earns credit for the verified work.
        </p>
        <ul className="uses">
          <li>Runs only after {idleMinutes} minutes without keyboard or mouse input, and not on battery.</li>
          <li>
            Keeps the GPU under {settings.gpuTempLimitC} °C and at most {settings.dutyCyclePct}% busy; change
            these any time in Settings.
          </li>
          <li>Uses your network connection to exchange model data with the network you choose.</li>
          <li>Nothing starts until you accept below, and you can pause it at any moment.</li>
        </ul>
      </Card>

      <Card title="1. Choose a network" className="wide">
        <NetworkChooser id="first-run-network" send={send} found={probe} onFound={setProbe} />
      </Card>

      <Card title="2. Payout address">
        <div className="payout">
          <label htmlFor="first-run-payout">Where payouts go (optional, an Ethereum-style address)</label>
          <CodeInput
            id="first-run-payout"
            placeholder="0x…"
            value={payout}
            invalid={payoutError !== null}
            aria-describedby={payoutError ? 'first-run-payout-error' : 'first-run-payout-hint'}
            onChange={(e) => {
              setPayout(e.target.value);
              setPayoutError(null);
            }}
          />
          {payoutError ? (
            <ErrorAlert id="first-run-payout-error" errors={[payoutError]} />
          ) : (
            <p id="first-run-payout-hint" className="hint">
              Credit is recorded either way; you can add or change this in the wallet.
            </p>
          )}
        </div>
      </Card>

      <Card title="3. Start at login">
        <label className="choice">
          <input type="checkbox" checked={startAtLogin} onChange={(e) => setStartAtLogin(e.target.checked)} />
          Start Tributary in the background when I log in
        </label>
      </Card>

      <div className="form-actions wide">
        <button type="submit" className="primary" disabled={busy}>
          Accept and start
        </button>
        <span className="muted">Tributary stays paused until you accept.</span>
        <ErrorAlert errors={errors} />
      </div>
    </form>
  );
}
