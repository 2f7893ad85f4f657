export interface MeterProps {
  label: string;
  /** What the bar shows, 0..1; the text says it in units. null: nothing to show, so no bar. */
  fraction: number | null;
  valueText: string;
  detail?: string;
  tone?: 'ok' | 'warn' | 'bad';
  /** Where a limit sits on the bar, 0..1. */
  markAt?: number;
  markLabel?: string;
}

/** A labelled bar with its value in words, for temperatures, load and progress. */
export function Meter({ label, fraction, valueText, detail, tone = 'ok', markAt, markLabel }: MeterProps) {
  const clamped = fraction === null ? null : Math.max(0, Math.min(1, fraction));
  return (
    <div className="meter">
      <div className="meter-head">
        <span className="meter-label">{label}</span>
        <span className="meter-value">{valueText}</span>
      </div>
      {clamped === null ? null : (
        <div
          className="meter-track"
          role="progressbar"
          aria-label={label}
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round(clamped * 100)}
          aria-valuetext={valueText}
        >
          <div className={`meter-fill tone-${tone}`} style={{ width: `${clamped * 100}%` }} />
          {markAt === undefined ? null : (
            <div
              className="meter-mark"
              style={{ left: `${Math.max(0, Math.min(1, markAt)) * 100}%` }}
              title={markLabel}
            />
          )}
        </div>
      )}
      {detail ? <div className="meter-detail">{detail}</div> : null}
    </div>
  );
}
