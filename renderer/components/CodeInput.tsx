import type { InputHTMLAttributes } from 'react';

/** A one-line field for machine text (addresses, keys): no spell check, no autofill, monospace. */
export function CodeInput({
  invalid,
  ...rest
}: Omit<InputHTMLAttributes<HTMLInputElement>, 'type' | 'aria-invalid'> & { invalid: boolean }) {
  return (
    <input
      type="text"
      className="code-input"
      spellCheck={false}
      autoComplete="off"
      aria-invalid={invalid}
      {...rest}
    />
  );
}

/** Errors that block an action, read out as soon as they appear. */
export function ErrorAlert({ errors, id }: { errors: readonly string[]; id?: string }) {
  if (errors.length === 0) return null;
  return (
    <p id={id} className="error" role="alert">
      {errors.join(' ')}
    </p>
  );
}
