"""The page's stylesheet: readable on a laptop screen, tables that scroll, and a print layout."""

CSS = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5a6472; --line: #dde2e8; --band: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header, main { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 32px 0 12px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.meta { color: var(--muted); margin: 0 0 8px; font-size: 0.9rem; overflow-wrap: anywhere; }
.empty { background: #fff6dd; border: 1px solid #e8d28a; padding: 10px 14px; border-radius: 6px; }
.none { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--band); position: sticky; top: 0; }
td { overflow-wrap: anywhere; max-width: 32ch; }
td[data-col="date"], td[data-col$="_at"], td[data-col^="period_"] { white-space: nowrap; }
td[data-col="budget"], td[data-col="tags"] { overflow-wrap: normal; min-width: 12ch; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 10px; }
.facts div { background: var(--band); border-radius: 6px; padding: 8px 12px; }
.facts dt { color: var(--muted); font-size: 0.82rem; }
.facts dd { margin: 2px 0 0; font-size: 1.1rem; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
figure.chart { margin: 0 0 12px; }
@media print {
  body { font-size: 10pt; }
  header, main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure.chart, table, .facts { break-inside: avoid; }
  .modebar-container { display: none !important; }
  thead th { position: static; }
}
"""
