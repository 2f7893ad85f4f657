import { useEffect, useMemo, useState, type FormEvent } from 'react';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { Card } from '../components/Card.js';
import { Chart } from '../components/Chart.js';
import { downloadText, receiptsCsv } from '../csv.js';
import { formatDateTime, formatFlops, formatInteger, RECEIPT_STATUS_LABEL } from '../format.js';

interface Props {
  snapshot: AgentSnapshot;
  send: (command: AgentCommand) => Promise<CommandResult>;
  /** The agent's full-ledger export; without it the receipts in the snapshot are exported. */
  ledgerCsvUrl: string | null;
}

/** A quick check before asking the agent, which has the final word (checksums included). */
export function payoutAddressProblem(address: string): string | null {
  if (address === '') return null;
  if (!/^0x[0-9a-fA-F]{40}$/.test(address))
    return 'A payout address is "0x" followed by 40 hexadecimal characters.';
  return null;
}

/** "Nov 22" for "2026-11-22", whatever the viewer's time zone. */
function dayLabel(day: string): string {
  const date = new Date(`${day}T12:00:00Z`);
  return Number.isNaN(date.getTime())
    ? day
    : date.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

export function Wallet({ snapshot, send, ledgerCsvUrl }: Props) {
  const { wallet } = snapshot;
  const earnings = useMemo(
    () => ({ labels: wallet.earnings.map((e) => dayLabel(e.day)), ys: wallet.earnings.map((e) => e.flops) }),
    [wallet.earnings],
  );
  const total = wallet.earnings.reduce((sum, e) => sum + e.flops, 0);

  return (
    <div className="view wallet">
      <Card title="Balance">
        <dl className="balances">
          <div>
            <dt>Confirmed</dt>
            <dd data-testid="balance-confirmed">{formatFlops(wallet.confirmedFlops)}</dd>
          </div>
          <div>
            <dt>Pending verification</dt>
            <dd data-testid="balance-pending">{formatFlops(wallet.pendingFlops)}</dd>
          </div>
          <div>
            <dt>Paid out</dt>
            <dd>{formatFlops(wallet.paidOutFlops)}</dd>
          </div>
          <div>
            <dt>Rejected</dt>
            <dd>{formatFlops(wallet.revokedFlops)}</dd>
          </div>
        </dl>
        {wallet.reconciliation ? (
          <p className={wallet.reconciliation.matches ? 'ok' : 'error'} data-testid="reconciliation">
            {wallet.reconciliation.summary}{' '}
            <span className="muted">
              (checked against the coordinator {formatDateTime(wallet.reconciliation.at)})
            </span>
          </p>
        ) : null}
        <p className="muted">
          Credit is counted in verified floating-point operations (FLOP) of training work.
        </p>
      </Card>

      <PayoutAddress current={wallet.payoutAddress} send={send} />

      <Card title="Earnings over time" className="wide">
        <Chart
          label="Credited work per day"
          summary={
            wallet.earnings.length > 0
              ? `${formatFlops(total)} credited over ${wallet.earnings.length} day${wallet.earnings.length === 1 ? '' : 's'}.`
              : 'Nothing credited yet.'
          }
          x={{ kind: 'category', labels: earnings.labels }}
          ys={earnings.ys}
          yAxisSize={96}
          seriesLabel="credited work"
          formatY={formatFlops}
          style="bars"
        />
      </Card>

      <Card title="Receipts" className="wide">
        <div className="table-actions">
          <span className="muted">
            {wallet.recentReceipts.length === 0
              ? 'No receipts yet.'
              : `The ${wallet.recentReceipts.length} most recent signed receipts.`}
          </span>
          {ledgerCsvUrl ? (
            <a className="button" href={ledgerCsvUrl} download>
              Export CSV
            </a>
          ) : (
            <button
              type="button"
              disabled={wallet.recentReceipts.length === 0}
              onClick={() =>
                downloadText(
                  `tributary-receipts-${new Date().toISOString().slice(0, 10)}.csv`,
                  receiptsCsv(wallet.recentReceipts),
                  'text/csv',
                )
              }
            >
              Export CSV
            </button>
          )}
        </div>
        {wallet.recentReceipts.length > 0 ? (
          <div className="table-scroll">
            <table>
              <thead>
                <tr>
                  <th scope="col">Issued</th>
                  <th scope="col">Stage</th>
                  <th scope="col" className="num">
                    Step
                  </th>
                  <th scope="col" className="num">
                    Tokens
                  </th>
                  <th scope="col" className="num">
                    Work
                  </th>
                  <th scope="col">Verification</th>
                </tr>
              </thead>
              <tbody>
                {wallet.recentReceipts.map((r) => (
                  <tr key={r.receiptId} title={`receipt ${r.receiptId}, run ${r.runId}`}>
                    <td>{formatDateTime(r.issuedAt)}</td>
                    <td>{r.stage + 1}</td>
                    <td className="num">{formatInteger(r.step)}</td>
                    <td className="num">{formatInteger(r.tokens)}</td>
                    <td className="num">{formatFlops(r.flops)}</td>
                    <td>
                      <span className={`pill receipt-${r.status}`}>{RECEIPT_STATUS_LABEL[r.status]}</span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </Card>
    </div>
  );
}

function PayoutAddress({
  current,
  send,
}: {
  current: string | null;
  send: (command: AgentCommand) => Promise<CommandResult>;
}) {
  const [draft, setDraft] = useState(current ?? '');
  const [errors, setErrors] = useState<string[]>([]);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);

  useEffect(() => setDraft(current ?? ''), [current]);

  const submit = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    setSaved(false);
    const address = draft.trim();
    const problem = payoutAddressProblem(address);
    if (problem) {
      setErrors([problem]);
      return;
    }
    setBusy(true);
    const result = await send({ type: 'setPayoutAddress', address });
    setBusy(false);
    setErrors(result.ok ? [] : result.errors);
    setSaved(result.ok);
  };

  const invalid = errors.length > 0;
  return (
    <Card title="Payout address">
      <form className="payout" onSubmit={(e) => void submit(e)} noValidate>
        <label htmlFor="payout-address">Where payouts go (an Ethereum-style address)</label>
        <div className="input-row">
          <input
            id="payout-address"
            name="payout-address"
            type="text"
            spellCheck={false}
            autoComplete="off"
            placeholder="0x…"
            value={draft}
            aria-invalid={invalid}
            aria-describedby={invalid ? 'payout-address-error' : undefined}
            onChange={(e) => {
              setDraft(e.target.value);
              setSaved(false);
            }}
          />
          <button type="submit" disabled={busy}>
            Save
          </button>
        </div>
        {invalid ? (
          <p id="payout-address-error" className="error" role="alert">
            {errors.join(' ')}
          </p>
        ) : null}
        {saved ? (
          <p className="ok" role="status">
            Saved.
          </p>
        ) : null}
        {current === null && !saved ? (
          <p className="muted">No payout address yet: credit is still recorded.</p>
        ) : null}
      </form>
    </Card>
  );
}
