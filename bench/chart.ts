/**
 * The benchmark's chart: an SVG with two panels, one above the other, of grouped bars per
 * scenario and server: the
 * CPU a round trip costs the server (all its threads; lower is better), each bar labelled with
 * its multiple of the scenario's reference (the bare isolate, for echo), and the round trips per
 * second measured. Each scenario group has its own scale (S3 moves 64 KiB per round trip, S1
 * 64 B), so bars compare servers within a scenario, not scenarios.
 *
 * Runs on the benchmark's main thread.
 *
 * @module
 */

/** One bar: a server's figures in a scenario. */
export interface ChartBar {
  scenario: string;
  server: string;
  /** Measured round trips per second. */
  measured: number;
  /** The server's CPU per round trip, all threads, in microseconds; null if unknown. */
  cpuUs: number | null;
  /** `cpuUs` as a multiple of the scenario's reference; null for the reference itself. */
  cpuRatio: number | null;
}

const COLORS: Record<string, string> = {
  "kernel-1w": "#f28e2b",
  "kernel-1w-streams": "#ffbe7d",
  kernel: "#e15759",
  main: "#4e79a7",
  baseline: "#59a14f",
  node: "#76b7b2",
  "c-epoll": "#9c755f",
  bun: "#edc948",
  "hash-1w": "#b07aa1",
  "hash-2w": "#ff9da7",
  "memcache-main": "#4e79a7",
  "memcache-kernel": "#e15759",
  memcached: "#9c755f",
};
const FALLBACK_COLORS = ["#bab0ac", "#8cd17d", "#d37295", "#499894"];

/**
 * Renders the chart.
 *
 * @param bars Every scenario and server's figures.
 * @param caption A line under the title (date, machine).
 * @returns SVG text.
 */
export function renderChart(bars: ChartBar[], caption: string): string {
  const scenarios = [...new Set(bars.map((b) => b.scenario))];
  const servers = [...new Set(bars.map((b) => b.server))];
  const color = (server: string) =>
    COLORS[server] ?? FALLBACK_COLORS[servers.indexOf(server) % FALLBACK_COLORS.length]!;
  const barWidth = 18;
  const gap = 26;
  // Each scenario's group is as wide as the servers it compares.
  const groups = scenarios.map((scenario) => ({
    scenario,
    bars: servers.flatMap((server) =>
      bars.filter((b) => b.scenario === scenario && b.server === server)
    ),
  }));
  const groupX: number[] = [];
  let x = 20;
  for (const group of groups) {
    groupX.push(x);
    x += group.bars.length * barWidth + gap;
  }
  const width = Math.max(x + 20, 760);
  const panelHeight = 200;
  const panelGap = 60;
  const top = 80;
  const legendTop = top + 2 * panelHeight + panelGap + 40;
  const perRow = Math.max(1, Math.floor((width - 40) / 150));
  const height = legendTop + Math.ceil(servers.length / perRow) * 18 + 40;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="20" y="24" font-size="15" font-weight="bold">Echo servers: CPU per round trip, and round trips per second</text>`,
    `<text x="20" y="42" fill="#555">${escape(caption)}</text>`,
  ];
  const panel = (
    y0: number,
    title: string,
    value: (b: ChartBar) => number | null,
    label: (b: ChartBar, v: number) => string,
    unit: string,
  ) => {
    parts.push(`<text x="20" y="${y0 - 10}" font-weight="bold">${escape(title)}</text>`);
    const baseY = y0 + panelHeight;
    parts.push(`<line x1="20" y1="${baseY}" x2="${width - 20}" y2="${baseY}" stroke="#333"/>`);
    groups.forEach((group, g) => {
      const max = Math.max(1e-9, ...group.bars.map((b) => value(b) ?? 0));
      group.bars.forEach((bar, i) => {
        const v = value(bar);
        if (v === null || !Number.isFinite(v)) return;
        const h = (v / max) * (panelHeight - 24);
        const bx = groupX[g]! + i * barWidth;
        parts.push(
          `<rect x="${bx}" y="${baseY - h}" width="${barWidth - 3}" height="${h}" ` +
            `fill="${color(bar.server)}"><title>${
              escape(`${group.scenario} ${bar.server}: ${v.toLocaleString("en-US")} ${unit}`)
            }</title></rect>`,
          `<text x="${bx + (barWidth - 3) / 2}" y="${baseY - h - 3}" text-anchor="middle" ` +
            `font-size="8">${escape(label(bar, v))}</text>`,
        );
      });
      parts.push(
        `<text x="${groupX[g]! + (group.bars.length * barWidth) / 2}" y="${baseY + 15}" ` +
          `text-anchor="middle">${escape(group.scenario)}</text>`,
      );
    });
  };
  panel(
    top,
    "CPU per round trip, all server threads (lower is better); over each bar: x the reference",
    (b) => b.cpuUs,
    (b, v) => b.cpuRatio === null ? v.toFixed(1) : `${b.cpuRatio.toFixed(2)}x`,
    "us per round trip",
  );
  panel(
    top + panelHeight + panelGap,
    "Round trips per second, measured here",
    (b) => b.measured,
    (_, v) => short(v),
    "round trips/s",
  );
  servers.forEach((server, i) => {
    const lx = 20 + (i % perRow) * 150;
    const ly = legendTop + Math.floor(i / perRow) * 18;
    parts.push(
      `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color(server)}"/>`,
      `<text x="${lx + 18}" y="${ly}">${escape(server)}</text>`,
    );
  });
  parts.push(
    `<text x="20" y="${height - 14}" fill="#555">Bars within a scenario share a scale; ` +
      `scenarios do not. Reference: the bare Deno isolate (baseline) for echo, 1 worker for S5, ` +
      `memcached for S6.</text>`,
    "</svg>",
  );
  return parts.join("\n") + "\n";
}

function short(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)}k`;
  return v.toFixed(0);
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
