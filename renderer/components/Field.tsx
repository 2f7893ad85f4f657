import type { ReactNode } from 'react';

interface FieldProps {
  id: string;
  label: string;
  hint?: string;
  errors: string[];
  children: (describedBy: string | undefined, invalid: boolean) => ReactNode;
}

/** A labelled form control with its hint and its validation messages, wired for screen readers. */
export function Field({ id, label, hint, errors, children }: FieldProps) {
  const invalid = errors.length > 0;
  const describedBy =
    [hint ? `${id}-hint` : null, invalid ? `${id}-error` : null].filter(Boolean).join(' ') || undefined;
  return (
    <div className={`field${invalid ? ' invalid' : ''}`}>
      <label htmlFor={id}>{label}</label>
      {children(describedBy, invalid)}
      {hint ? (
        <p id={`${id}-hint`} className="hint">
          {hint}
        </p>
      ) : null}
      {invalid ? (
        <p id={`${id}-error`} className="error">
          {errors.join(' ')}
        </p>
      ) : null}
    </div>
  );
}

interface NumberFieldProps {
  id: string;
  label: string;
  unit: string;
  value: string;
  onChange: (value: string) => void;
  errors: string[];
  hint?: string;
  placeholder?: string;
}

export function NumberField({
  id,
  label,
  unit,
  value,
  onChange,
  errors,
  hint,
  placeholder,
}: NumberFieldProps) {
  return (
    <Field id={id} label={label} hint={hint} errors={errors}>
      {(describedBy, invalid) => (
        <span className="with-unit">
          <input
            id={id}
            name={id}
            type="text"
            inputMode="decimal"
            value={value}
            placeholder={placeholder}
            aria-invalid={invalid}
            aria-describedby={describedBy}
            onChange={(e) => onChange(e.target.value)}
          />
          <span className="unit">{unit}</span>
        </span>
      )}
    </Field>
  );
}
