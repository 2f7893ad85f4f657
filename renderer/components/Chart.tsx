import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartProps {
  /** Names the plot for screen readers; `summary` says in words what it shows. */
  label: string;
  summary: string;
  ys: number[];
  /** Plain values such as steps, or one named category (a day) per point. */
  x: { kind: 'number'; values: number[] } | { kind: 'category'; labels: string[] };
  seriesLabel: string;
  /** A second, dashed line over the same x (null where it has no value), e.g. validation beside training. */
  ys2?: Array<number | null>;
  series2Label?: string;
  formatY: (value: number) => string;
  style?: 'line' | 'bars';
  height?: number;
  /** Room for the y labels, in px; wide units ("12.4 PFLOP") need more than plain numbers. */
  yAxisSize?: number;
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Re-reads the palette when the system switches between light and dark. */
function useColorScheme(): string {
  const [scheme, setScheme] = useState(() =>
    matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light',
  );
  useEffect(() => {
    const query = matchMedia('(prefers-color-scheme: dark)');
    const onChange = (): void => setScheme(query.matches ? 'dark' : 'light');
    query.addEventListener('change', onChange);
    return () => query.removeEventListener('change', onChange);
  }, []);
  return scheme;
}

function xValues(x: ChartProps['x']): number[] {
  return x.kind === 'number' ? x.values : x.labels.map((_, i) => i);
}

function xAxis(x: ChartProps['x']): Partial<uPlot.Axis> {
  if (x.kind === 'number') return {};
  const labels = x.labels;
  return {
    incrs: [1],
    values: (_u, splits) => splits.map((i) => (Number.isInteger(i) ? (labels[i] ?? '') : '')),
  };
}

function buildOptions(props: ChartProps, width: number): uPlot.Options {
  const text = cssVar('--text-muted');
  const grid = cssVar('--chart-grid');
  const stroke = cssVar('--accent');
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const bars = props.style === 'bars' ? uPlot.paths.bars?.({ size: [0.6, 48] }) : undefined;
  return {
    width,
    height: props.height ?? 220,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: {
        time: false,
        // Categories sit in the middle of their slot, so the first and last bar are not cut in half.
        range: props.x.kind === 'category' ? (_u, min, max) => [min - 0.5, max + 0.5] : undefined,
      },
      // Bars measure from zero; a line (loss) uses the room it needs.
      y: props.style === 'bars' ? { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } : {},
    },
    axes: [
      { ...axis, ...xAxis(props.x) },
      { ...axis, size: props.yAxisSize ?? 64, values: (_u, values) => values.map((v) => props.formatY(v)) },
    ],
    series: [
      {},
      {
        label: props.seriesLabel,
        stroke,
        width: 2,
        fill: props.style === 'bars' ? stroke : undefined,
        paths: bars,
        points: { show: props.style !== 'bars' && props.ys.length < 40 },
      },
      ...(props.ys2
        ? [{ label: props.series2Label, stroke: cssVar('--text'), width: 2, dash: [6, 4], spanGaps: true }]
        : []),
    ],
  };
}

/** A uPlot line or bar chart that fills its container's width. */
export function Chart(props: ChartProps) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const scheme = useColorScheme();
  const { ys, ys2 } = props;
  const data = (): uPlot.AlignedData => (ys2 ? [xs, ys, ys2] : [xs, ys]);
  const xs = xValues(props.x);
  const xKey = props.x.kind === 'category' ? props.x.labels.join(',') : 'number';
  const empty = ys.length === 0;
  const optionsKey = `${scheme}|${props.style ?? 'line'}|${xKey}|${ys.length < 40}|${empty}|${ys2 !== undefined}`;

  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const chart = new uPlot(buildOptions(props, element.clientWidth || 300), data(), element);
    plot.current = chart;
    const observer = new ResizeObserver(() =>
      chart.setSize({ width: element.clientWidth, height: props.height ?? 220 }),
    );
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
    // The chart is rebuilt only when its look changes; data flows in through setData below.
  }, [optionsKey]);

  useEffect(() => {
    plot.current?.setData(data());
    // xs is derived from props.x on every render; ys and ys2 change exactly when the data does.
  }, [ys, ys2]);

  return (
    <figure className="chart" aria-label={props.label}>
      {empty ? null : (
        <div ref={host} className="chart-plot" role="img" aria-label={`${props.label}: ${props.summary}`} />
      )}
      <figcaption className="chart-summary">{props.summary}</figcaption>
    </figure>
  );
}
