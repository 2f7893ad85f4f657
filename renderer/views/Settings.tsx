import { useEffect, useState, type FormEvent } from 'react';
import type { AgentCommand, CommandResult } from '../../shared/dashboard/contract.js';
import type { AgentSettings } from '../../shared/dashboard/settings.js';
import { Card } from '../components/Card.js';
import { Field, NumberField } from '../components/Field.js';
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
  const [status, setStatus] = useState<'idle' | 'saving' | 'saved'>('idle');

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
          }}
        >
          Discard changes
        </button>
        <span role="status" className={errorCount > 0 ? 'error' : 'ok'}>
          {errorCount > 0
            ? `Not saved: ${errorCount} problem${errorCount === 1 ? '' : 's'} to fix.`
            : status === 'saved'
              ? 'Saved.'
              : ''}
        </span>
      </div>
      {general.length > 0 ? (
        <p className="error" role="alert">
          {general.join(' ')}
        </p>
      ) : null}
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

  return (
    <fieldset className="schedule">
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
              onClick={() => edit({ schedule: draft.schedule.filter((_, i) => i !== index) })}
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
