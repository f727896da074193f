/** Measured values with optional targets, printed as tables and written as JSON. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface Target {
  op: '<=' | '>=';
  value: number;
}

export interface Metric {
  /** Stable key for the JSON output, e.g. `create_ops_per_s`. */
  key: string;
  label: string;
  value: number;
  unit: string;
  target?: Target;
  /** The one figure the benchmark is about: listed first in the summary. */
  headline?: boolean;
  /** false: only in the JSON (and the summary, if it has a target), not in the section's metric table. */
  inTable?: boolean;
}

export interface Table {
  header: string[];
  rows: string[][];
}

export interface Section {
  id: string;
  title: string;
  metrics: Metric[];
  /** Extra tables shown before the metrics (e.g. local vs stowage side by side). */
  tables: Table[];
  notes: string[];
  /** Raw numbers worth keeping in the JSON beyond the metrics. */
  details: Record<string, unknown>;
}

export function newSection(id: string, title: string): Section {
  return { id, title, metrics: [], tables: [], notes: [], details: {} };
}

export function addMetric(section: Section, metric: Metric): void {
  section.metrics.push(metric);
}

export const atMost = (value: number): Target => ({ op: '<=', value });
export const atLeast = (value: number): Target => ({ op: '>=', value });

/** A shorter `addMetric` for sections with many rows. */
export function metricAdder(section: Section) {
  return (key: string, label: string, value: number, unit: string, target?: Target,
    extra: Pick<Metric, 'headline' | 'inTable'> = {}): void => {
    section.metrics.push({ key, label, value, unit, ...(target ? { target } : {}), ...extra });
  };
}

export function verdict(metric: Metric): 'PASS' | 'MISS' | '-' {
  const { target } = metric;
  if (target === undefined) return '-';
  const ok = target.op === '<=' ? metric.value <= target.value : metric.value >= target.value;
  return ok ? 'PASS' : 'MISS';
}

/** Rounds for display: 3 significant digits below 100, integers above. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 100) return Math.round(value).toString();
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

export function renderTable(table: Table): string {
  const widths = table.header.map((h, i) => Math.max(h.length, ...table.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return ['  ' + line(table.header), '  ' + rule, ...table.rows.map((r) => '  ' + line(r))].join('\n');
}

function metricsTable(metrics: Metric[]): Table {
  return {
    header: ['metric', 'value', 'unit', 'target', 'result'],
    rows: metrics.map((m) => [
      m.label,
      fmt(m.value),
      m.unit,
      m.target ? `${m.target.op} ${fmt(m.target.value)}` : '-',
      verdict(m),
    ]),
  };
}

export function renderSection(section: Section): string {
  const parts = [`\n== ${section.title} ==`];
  for (const table of section.tables) parts.push(renderTable(table), '');
  const shown = section.metrics.filter((m) => m.inTable !== false);
  if (shown.length > 0) parts.push(renderTable(metricsTable(shown)));
  for (const note of section.notes) parts.push(`  note: ${note}`);
  return parts.join('\n');
}

export function renderSummary(sections: Section[]): string {
  const targeted = sections
    .flatMap((s) => s.metrics.filter((m) => m.target).map((m) => ({ s, m })))
    .sort((a, b) => Number(b.m.headline === true) - Number(a.m.headline === true));
  const rows = targeted.map(({ s, m }) => [
    `${m.headline ? 'HEADLINE ' : ''}${s.id}: ${m.label}`, `${m.target?.op} ${fmt(m.target?.value ?? 0)} ${m.unit}`,
    `${fmt(m.value)} ${m.unit}`, verdict(m),
  ]);
  const missed = targeted.filter(({ m }) => verdict(m) === 'MISS').length;
  return [
    '\n== Summary: targets ==',
    renderTable({ header: ['target', 'wanted', 'measured', 'result'], rows }),
    `  ${targeted.length - missed}/${targeted.length} targets met`,
  ].join('\n');
}

export async function writeJson(path: string, data: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(data, null, 2) + '\n');
}

/** The JSON form of a section: metrics keyed by `key`, with their verdicts. */
export function sectionJson(section: Section): Record<string, unknown> {
  return {
    title: section.title,
    metrics: Object.fromEntries(section.metrics.map((m) => [m.key, {
      value: m.value, unit: m.unit, ...(m.target ? { target: m.target, result: verdict(m) } : {}),
    }])),
    notes: section.notes,
    details: section.details,
  };
}
