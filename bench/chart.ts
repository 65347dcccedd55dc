/**
 * The benchmark's chart: an SVG with two panels of grouped bars, round trips per second
 * measured per scenario and server, and the ceiling the per-thread CPU figures imply for a
 * machine with more cores. Each scenario group has its own scale (S3 moves 64 KiB per round
 * trip, S1 64 B), so bars compare servers within a scenario, not scenarios.
 *
 * Runs on the benchmark's main thread.
 *
 * @module
 */

/** One bar: a server's figure in a scenario. */
export interface ChartBar {
  scenario: string;
  server: string;
  /** Measured round trips per second. */
  measured: number;
  /** Round trips per second the CPU model allows on `cores` cores; null if unknown. */
  ceiling: number | null;
}

const COLORS: Record<string, string> = {
  main: "#4e79a7",
  kernel: "#f28e2b",
  baseline: "#59a14f",
};
const FALLBACK_COLORS = ["#e15759", "#76b7b2", "#edc948", "#b07aa1"];

/**
 * Renders the chart.
 *
 * @param bars Every scenario and server's figures.
 * @param cores The core count the ceilings were computed for.
 * @param caption A line under the title (date, machine).
 * @returns SVG text.
 */
export function renderChart(bars: ChartBar[], cores: number, caption: string): string {
  const scenarios = [...new Set(bars.map((b) => b.scenario))];
  const servers = [...new Set(bars.map((b) => b.server))];
  const color = (server: string, i: number) =>
    COLORS[server] ?? FALLBACK_COLORS[i % FALLBACK_COLORS.length]!;
  const barWidth = 22;
  const groupWidth = servers.length * barWidth + 28;
  const panelWidth = scenarios.length * groupWidth + 20;
  const panelHeight = 220;
  const top = 70;
  const width = panelWidth * 2 + 60;
  const height = top + panelHeight + 90;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="20" y="24" font-size="15" font-weight="bold">Echo round trips per second, by scenario and server</text>`,
    `<text x="20" y="42" fill="#555">${escape(caption)}</text>`,
  ];
  const panel = (
    x0: number,
    title: string,
    value: (b: ChartBar) => number | null,
  ) => {
    parts.push(`<text x="${x0}" y="${top - 8}" font-weight="bold">${escape(title)}</text>`);
    const baseY = top + panelHeight;
    parts.push(
      `<line x1="${x0}" y1="${baseY}" x2="${x0 + panelWidth - 20}" y2="${baseY}" stroke="#333"/>`,
    );
    scenarios.forEach((scenario, g) => {
      const group = bars.filter((b) => b.scenario === scenario);
      const max = Math.max(1, ...group.map((b) => value(b) ?? 0));
      const gx = x0 + g * groupWidth + 10;
      servers.forEach((server, i) => {
        const bar = group.find((b) => b.server === server);
        const v = bar === undefined ? null : value(bar);
        if (v === null) return;
        const h = (v / max) * (panelHeight - 30);
        const x = gx + i * barWidth;
        parts.push(
          `<rect x="${x}" y="${baseY - h}" width="${barWidth - 4}" height="${h}" ` +
            `fill="${color(server, i)}"><title>${
              escape(`${scenario} ${server}: ${Math.round(v).toLocaleString("en-US")}/s`)
            }</title></rect>`,
          `<text x="${x + (barWidth - 4) / 2}" y="${baseY - h - 4}" text-anchor="middle" ` +
            `font-size="9">${short(v)}</text>`,
        );
      });
      parts.push(
        `<text x="${gx + (servers.length * barWidth) / 2}" y="${baseY + 16}" ` +
          `text-anchor="middle">${escape(scenario)}</text>`,
      );
    });
  };
  panel(20, "Measured here", (b) => b.measured);
  panel(panelWidth + 40, `Ceiling on ${cores} cores (CPU per round trip model)`, (b) => b.ceiling);
  servers.forEach((server, i) => {
    const x = 20 + i * 140;
    const y = top + panelHeight + 50;
    parts.push(
      `<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${color(server, i)}"/>`,
      `<text x="${x + 18}" y="${y}">${escape(server)}</text>`,
    );
  });
  parts.push(
    `<text x="20" y="${height - 12}" fill="#555">Bars within a scenario share a scale; ` +
      `scenarios do not. Ceiling = min(1 / main-thread CPU per trip, ${cores} / total CPU per trip).</text>`,
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
