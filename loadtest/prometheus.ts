/** Reading the service's /metrics text (Prometheus exposition format) in load tests and tests. */

/** The value of an unlabelled series `name` in a /metrics text; NaN when the series is absent. */
export function metricValue(text: string, name: string): number {
  return Number(new RegExp(`^${name} ([0-9.e+-]+)`, 'm').exec(text)?.[1] ?? NaN);
}
