import { useEffect, useRef, useState, type FormEvent } from 'react';
import type { AgentCommand, CommandResult, NetworkProbe } from '../../shared/dashboard/contract.js';
import type { AgentSettings } from '../../shared/dashboard/settings.js';
import { Card } from '../components/Card.js';
import { ErrorAlert } from '../components/CodeInput.js';
import { Field, NumberField } from '../components/Field.js';
import { NetworkChooser } from '../components/NetworkChooser.js';
import {
  draftToPatch,
  errorsFor,
  fieldErrorsFromMessages,
  toDraft,
  type FieldErrors,
  type SettingsDraft,
} from './settings-draft.js';

interface Props {
  settings: AgentSettings;
  send: (command: AgentCommand) => Promise<CommandResult>;
}

const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

type NumberDraftKey = {
  [K in keyof SettingsDraft]: SettingsDraft[K] extends string ? K : never;
}[keyof SettingsDraft];

interface NumberFieldSpec {
  key: NumberDraftKey;
  /** The setting its errors are reported under, when the draft field has another name or unit. */
  setting?: string;
  label: string;
  unit: string;
  hint?: string;
  placeholder?: string;
}

const IDLE_FIELD: NumberFieldSpec = {
  key: 'idleMinutes',
  setting: 'idleAfterSeconds',
  label: 'Start after no keyboard or mouse input for',
  unit: 'min',
};

const LIMIT_FIELDS: NumberFieldSpec[] = [
  {
    key: 'gpuTempLimitC',
    label: 'GPU temperature limit',
    unit: '°C',
    hint: 'Work slows down as the GPU nears this and stops above it.',
  },
  {
    key: 'dutyCyclePct',
    label: 'GPU load cap',
    unit: '%',
    hint: 'The share of time Tributary may keep the GPU busy; lower means cooler and quieter.',
  },
  {
    key: 'vramCapMb',
    label: 'GPU memory cap',
    unit: 'MB',
    placeholder: 'no cap',
    hint: 'Leave empty for no cap.',
  },
];

const ADVANCED_FIELDS: NumberFieldSpec[] = [
  { key: 'tempStopMarginC', label: 'Stop this far above the limit', unit: '°C' },
  { key: 'tempResumeBelowC', label: 'After a stop, resume this far below the limit', unit: '°C' },
  { key: 'dashboardPort', label: 'Local dashboard port', unit: '', hint: '0 picks a free port at start.' },
];

function DraftNumberField({
  field,
  draft,
  errors,
  edit,
}: {
  field: NumberFieldSpec;
  draft: SettingsDraft;
  errors: FieldErrors;
  edit: (change: Partial<SettingsDraft>) => void;
}) {
  return (
    <NumberField
      id={field.key}
      label={field.label}
      unit={field.unit}
      hint={field.hint}
      placeholder={field.placeholder}
      value={draft[field.key]}
      onChange={(value) => edit({ [field.key]: value })}
      errors={errorsFor(errors, field.setting ?? field.key)}
    />
  );
}

export function Settings({ settings, send }: Props) {
  const [draft, setDraft] = useState<SettingsDraft>(() => toDraft(settings));
  const [dirty, setDirty] = useState(false);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [status, setStatus] = useState<'idle' | 'saving' | 'saved' | 'discarded'>('idle');
  const statusRef = useRef<HTMLSpanElement>(null);

  // Follow the agent's settings until the person starts editing; never overwrite their edits.
  useEffect(() => {
    if (!dirty) setDraft(toDraft(settings));
  }, [settings, dirty]);

  const edit = (change: Partial<SettingsDraft>): void => {
    setDraft((d) => ({ ...d, ...change }));
    setDirty(true);
    setStatus('idle');
  };

  const submit = async (event: FormEvent): Promise<void> => {
    event.preventDefault();
    const checked = draftToPatch(settings, draft);
    if (!checked.ok) {
      setErrors(checked.errors);
      return;
    }
    setErrors({});
    setStatus('saving');
    const result = await send({ type: 'updateSettings', patch: checked.patch });
    if (result.ok) {
      setDirty(false);
      setStatus('saved');
    } else {
      setErrors(fieldErrorsFromMessages(result.errors));
      setStatus('idle');
    }
  };

  const errorCount = Object.values(errors).reduce((n, list) => n + list.length, 0);
  const general = errors.settings ?? [];

  return (
    <form className="view settings" onSubmit={(e) => void submit(e)} noValidate aria-label="Settings">
      <Networks settings={settings} send={send} />
      <Card title="When to contribute">
        <fieldset>
          <legend>Run</legend>
          <label className="choice">
            <input
              type="radio"
              name="runWhen"
              checked={draft.runWhen === 'idle'}
              onChange={() => edit({ runWhen: 'idle' })}
            />
            Only when I am away from the computer
          </label>
          <label className="choice">
            <input
              type="radio"
              name="runWhen"
              checked={draft.runWhen === 'always'}
              onChange={() => edit({ runWhen: 'always' })}
            />
            Whenever the limits below allow (for servers)
          </label>
        </fieldset>
        <DraftNumberField field={IDLE_FIELD} draft={draft} errors={errors} edit={edit} />
        <label className="choice">
          <input
            type="checkbox"
            name="pauseOnBattery"
            checked={draft.pauseOnBattery}
            onChange={(e) => edit({ pauseOnBattery: e.target.checked })}
          />
          Pause while on battery
        </label>
        <ScheduleEditor draft={draft} errors={errors} edit={edit} />
        <Field
          id="pausePrograms"
          label="Pause while any of these programs runs"
          hint="One program per line, as the system lists it (for example steam or Code.exe)."
          errors={errorsFor(errors, 'pausePrograms')}
        >
          {(describedBy, invalid) => (
            <textarea
              id="pausePrograms"
              name="pausePrograms"
              rows={4}
              spellCheck={false}
              value={draft.pausePrograms}
              aria-invalid={invalid}
              aria-describedby={describedBy}
              onChange={(e) => edit({ pausePrograms: e.target.value })}
            />
          )}
        </Field>
      </Card>

      <Card title="How hard to run">
        {LIMIT_FIELDS.map((field) => (
          <DraftNumberField key={field.key} field={field} draft={draft} errors={errors} edit={edit} />
        ))}
        <details>
          <summary>Advanced</summary>
          {ADVANCED_FIELDS.map((field) => (
            <DraftNumberField key={field.key} field={field} draft={draft} errors={errors} edit={edit} />
          ))}
        </details>
      </Card>

      <div className="form-actions">
        <button type="submit" className="primary" disabled={status === 'saving'}>
          Save settings
        </button>
        <button
          type="button"
          disabled={!dirty}
          onClick={() => {
            setDraft(toDraft(settings));
            setDirty(false);
            setErrors({});
            setStatus('discarded');
            // This button is now disabled: focus goes to the message saying what happened, not to the page.
            statusRef.current?.focus();
          }}
        >
          Discard changes
        </button>
        <span role="status" className={errorCount > 0 ? 'error' : 'ok'} ref={statusRef} tabIndex={-1}>
          {errorCount > 0
            ? `Not saved: ${errorCount} problem${errorCount === 1 ? '' : 's'} to fix.`
            : status === 'saved'
              ? 'Saved.'
              : status === 'discarded'
                ? 'Changes discarded.'
                : ''}
        </span>
      </div>
      <ErrorAlert errors={general} />
    </form>
  );
}

function ScheduleEditor({
  draft,
  errors,
  edit,
}: {
  draft: SettingsDraft;
  errors: FieldErrors;
  edit: (change: Partial<SettingsDraft>) => void;
}) {
  const setWindow = (index: number, change: Partial<SettingsDraft['schedule'][number]>): void =>
    edit({ schedule: draft.schedule.map((w, i) => (i === index ? { ...w, ...change } : w)) });
  const scheduleErrors = errors.schedule ?? [];
  const root = useRef<HTMLFieldSetElement>(null);
  const focusAfterRemove = useRef<number | null>(null);
  // A removed window's button is gone: focus the next window's Remove, else "Add a time window".
  useEffect(() => {
    const index = focusAfterRemove.current;
    if (index === null) return;
    focusAfterRemove.current = null;
    const removes = root.current?.querySelectorAll<HTMLButtonElement>('.window button') ?? [];
    (
      removes[Math.min(index, removes.length - 1)] ??
      root.current?.querySelector<HTMLButtonElement>('.add-window')
    )?.focus();
  }, [draft.schedule.length]);

  return (
    <fieldset className="schedule" ref={root}>
      <legend>Time windows</legend>
      <p className="hint">
        {draft.schedule.length === 0
          ? 'Any time of day. Add a window to contribute only at certain times.'
          : 'Contribute only inside these windows (local time; an end before the start runs past midnight).'}
      </p>
      {draft.schedule.map((w, index) => {
        const key = `schedule.${index}`;
        const windowErrors = errorsFor(errors, key);
        return (
          <div className={`window${windowErrors.length > 0 ? ' invalid' : ''}`} key={index}>
            <div className="days" role="group" aria-label={`Days of window ${index + 1}`}>
              {DAY_NAMES.map((name, day) => (
                <label key={name} className="day">
                  <input
                    type="checkbox"
                    checked={w.days.includes(day)}
                    onChange={(e) =>
                      setWindow(index, {
                        days: e.target.checked ? [...w.days, day] : w.days.filter((d) => d !== day),
                      })
                    }
                  />
                  {name}
                </label>
              ))}
            </div>
            {(['start', 'end'] as const).map((end) => (
              <label key={end}>
                {end === 'start' ? 'From' : 'to'}{' '}
                <input
                  type="time"
                  value={w[end]}
                  aria-invalid={windowErrors.length > 0}
                  onChange={(e) => setWindow(index, { [end]: e.target.value })}
                />
              </label>
            ))}
            <button
              type="button"
              onClick={() => {
                focusAfterRemove.current = index;
                edit({ schedule: draft.schedule.filter((_, i) => i !== index) });
              }}
              aria-label={`Remove window ${index + 1}`}
            >
              Remove
            </button>
            {windowErrors.length > 0 ? <p className="error">{windowErrors.join(' ')}</p> : null}
          </div>
        );
      })}
      <button
        type="button"
        className="add-window"
        onClick={() =>
          edit({ schedule: [...draft.schedule, { days: [1, 2, 3, 4, 5], start: '22:00', end: '07:00' }] })
        }
      >
        Add a time window
      </button>
      {scheduleErrors.length > 0 ? <p className="error">{scheduleErrors.join(' ')}</p> : null}
    </fieldset>
  );
}

/**
 * The networks the person accepted: which one this computer works for, removing one, and adding another
 * (checked first, so its key is seen before it is pinned). Changes apply at once, outside the form's Save.
 */
function Networks({
  settings,
  send,
}: {
  settings: AgentSettings;
  send: (command: AgentCommand) => Promise<CommandResult>;
}) {
  const [probe, setProbe] = useState<NetworkProbe | null>(null);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const messageRef = useRef<HTMLParagraphElement>(null);

  const apply = async (
    networks: AgentSettings['networks'],
    activeNetwork: string | null,
    done: string,
  ): Promise<boolean> => {
    setBusy(true);
    const result = await send({ type: 'updateSettings', patch: { networks, activeNetwork } });
    setBusy(false);
    setMessage(result.ok ? { ok: true, text: done } : { ok: false, text: result.errors.join(' ') });
    return result.ok;
  };

  return (
    <Card title="Networks" className="wide">
      {settings.networks.length === 0 ? (
        <p className="muted">No network yet.</p>
      ) : (
        <ul className="networks">
          {settings.networks.map((network) => {
            const active = network.url === settings.activeNetwork;
            return (
              <li key={network.url} className="network-row">
                <span className="network-url">
                  {network.url} {active ? <strong>(this computer works for it)</strong> : null}
                </span>
                <code className="key" title="coordinator key">
                  {network.coordinatorKey}
                </code>
                <span className="button-row">
                  {active ? null : (
                    <button
                      type="button"
                      disabled={busy}
                      onClick={() =>
                        void apply(settings.networks, network.url, `Now working for ${network.url}.`)
                      }
                    >
                      Use this network
                    </button>
                  )}
                  <button
                    type="button"
                    disabled={busy}
                    aria-label={`Remove ${network.url}`}
                    onClick={() =>
                      void apply(
                        settings.networks.filter((n) => n.url !== network.url),
                        active ? null : settings.activeNetwork,
                        `Removed ${network.url}.`,
                      ).then(() => messageRef.current?.focus())
                    }
                  >
                    Remove
                  </button>
                </span>
              </li>
            );
          })}
        </ul>
      )}
      <details>
        <summary>Add a network</summary>
        <NetworkChooser id="settings-network" send={send} found={probe} onFound={setProbe} disabled={busy} />
        {probe ? (
          <button
            type="button"
            className="primary"
            disabled={busy}
            onClick={() =>
              void apply(
                [
                  ...settings.networks.filter((n) => n.url !== probe.url),
                  { url: probe.url, coordinatorKey: probe.coordinatorKey },
                ],
                probe.url,
                `Accepted ${probe.url} and pinned its key; this computer now works for it.`,
              ).then((ok) => ok && setProbe(null))
            }
          >
            Accept this key and use this network
          </button>
        ) : null}
      </details>
      <p role="status" className={message?.ok === false ? 'error' : 'ok'} ref={messageRef} tabIndex={-1}>
        {message?.text ?? ''}
      </p>
    </Card>
  );
}
