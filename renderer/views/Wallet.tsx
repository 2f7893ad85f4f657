import { useEffect, useMemo, useState, type FormEvent } from 'react';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { Card } from '../components/Card.js';
import { Chart } from '../components/Chart.js';
import { CodeInput, ErrorAlert } from '../components/CodeInput.js';
import { downloadText, receiptsCsv } from '../csv.js';
import { flopsToCredits, formatCredits, FLOP_PER_CREDIT } from '../../shared/dashboard/credits.js';
import { formatDateTime, formatFlops, formatInteger, RECEIPT_STATUS_LABEL } from '../format.js';
import { groupIntoSessions } from '../receipt-sessions.js';

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
    () => ({
      labels: wallet.earnings.map((e) => dayLabel(e.day)),
      ys: wallet.earnings.map((e) => flopsToCredits(e.flops)),
    }),
    [wallet.earnings],
  );
  const total = wallet.earnings.reduce((sum, e) => sum + e.flops, 0);
  const sessions = useMemo(() => groupIntoSessions(wallet.recentReceipts), [wallet.recentReceipts]);

  return (
    <div className="view wallet">
      <Card title="Balance">
        <dl className="balances">
          {(
            [
              ['Confirmed', 'confirmed', wallet.confirmedFlops],
              ['Pending confirmation', 'pending', wallet.pendingFlops],
              ['Revoked', 'revoked', wallet.revokedFlops],
            ] as const
          ).map(([label, id, flops]) => (
            <div key={id}>
              <dt>{label}</dt>
              <dd data-testid={`balance-${id}`}>{formatCredits(flops)}</dd>
              <dd className="flop">{formatFlops(flops)}</dd>
            </div>
          ))}
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
          One credit is 10¹⁵ floating-point operations (1 PFLOP) of verified training work. Work is pending
          until the network confirms the step it belongs to, and revoked if verification finds it wrong. Some
          of it is also recomputed by a second replica, and each session says how much. Nothing is paid out
          yet: your credit is recorded here and by the network.
        </p>
      </Card>

      <PayoutAddress current={wallet.payoutAddress} send={send} />

      <Card title="Earnings over time" className="wide">
        <Chart
          label="Credits earned per day"
          summary={
            wallet.earnings.length > 0
              ? `${formatCredits(total)} earned over ${wallet.earnings.length} day${wallet.earnings.length === 1 ? '' : 's'}.`
              : 'Nothing earned yet.'
          }
          x={{ kind: 'category', labels: earnings.labels }}
          ys={earnings.ys}
          yAxisSize={80}
          seriesLabel="credits"
          formatY={(credits) => formatCredits(credits * FLOP_PER_CREDIT).replace(/ credits?$/, '')}
          style="bars"
        />
      </Card>

      <Card title="Receipts by session" className="wide">
        <div className="table-actions">
          <span className="muted">
            {wallet.recentReceipts.length === 0
              ? 'No receipts yet.'
              : `The ${wallet.recentReceipts.length} most recent signed receipts, in ${sessions.length} session${sessions.length === 1 ? '' : 's'}.`}
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
        <ul className="sessions">
          {sessions.map((session) => (
            <li key={session.key} className="session" data-testid="session">
              <details>
                <summary>
                  <span className="session-when">
                    {formatDateTime(session.start)}
                    {session.end !== session.start ? ` – ${formatDateTime(session.end)}` : ''}
                  </span>
                  <span className="session-what">
                    {session.runId}, stage{session.stages.length === 1 ? '' : 's'}{' '}
                    {session.stages.map((stage) => stage + 1).join(', ')}: {session.receipts.length} receipt
                    {session.receipts.length === 1 ? '' : 's'}, {formatInteger(session.tokens)} tokens,{' '}
                    {formatCredits(session.flops)}
                  </span>
                  <span className="session-status">
                    {(['confirmed', 'pending', 'revoked'] as const)
                      .filter((status) => session.byStatus[status].count > 0)
                      .map((status) => (
                        <span key={status} className={`pill receipt-${status}`}>
                          {session.byStatus[status].count} {RECEIPT_STATUS_LABEL[status].toLowerCase()}
                        </span>
                      ))}
                    <span className="session-verified" data-testid="session-verified">
                      {session.verified} of {session.receipts.length} verified by a second replica
                    </span>
                  </span>
                </summary>
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
                          Credit
                        </th>
                        <th scope="col">Status</th>
                        <th scope="col">Second replica</th>
                      </tr>
                    </thead>
                    <tbody>
                      {session.receipts.map((r) => (
                        <tr key={r.receiptId} title={`receipt ${r.receiptId}, run ${r.runId}`}>
                          <td>{formatDateTime(r.issuedAt)}</td>
                          <td>{r.stage + 1}</td>
                          <td className="num">{formatInteger(r.step + 1)}</td>
                          <td className="num">{formatInteger(r.tokens)}</td>
                          <td className="num">{formatCredits(r.flops)}</td>
                          <td>
                            <span className={`pill receipt-${r.status}`}>
                              {RECEIPT_STATUS_LABEL[r.status]}
                            </span>
                          </td>
                          <td>{r.verified ? 'Agreed' : 'Not checked'}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              </details>
            </li>
          ))}
        </ul>
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
          <CodeInput
            id="payout-address"
            name="payout-address"
            placeholder="0x…"
            value={draft}
            invalid={invalid}
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
        <ErrorAlert id="payout-address-error" errors={errors} />
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
