#!/usr/bin/env python3
"""Check that every metric the alerts and the dashboard query really exists.

  python3 tests/ops/check_rules.py                        # against the contract fixtures
  python3 tests/ops/check_rules.py --metrics-url http://127.0.0.1:19100/metrics \\
                                   --metrics-url http://127.0.0.1:19101/metrics
  python3 tests/ops/check_rules.py scrape-gateway.txt scrape-dispatcher.txt

Sources of PromQL: deploy/prometheus/alerts.yml, the PrometheusRule in
k8s/base/monitoring/prometheusrule.yaml, and deploy/grafana/dashboards/*.json.
Each expression is parsed with a real PromQL parser (promql-parser); every
vector selector's metric name must be exported by the scrapes given (files or
URLs, in Prometheus text format), where `x_bucket` needs a histogram family `x`
and `x_sum`/`x_count` a histogram or summary `x`. Label names used in matchers
and in by/without clauses must exist on those metrics (target labels such as
job/instance/pod are allowed). Series Prometheus makes itself (up, ALERTS...)
and names recorded by recording rules are known too.

Also: the rules pass `promtool check rules` and the unit tests in
tests/ops/alerts_test.yml, every alert has a runbook section in
docs/operations.md, and the extractor passes its own self-test.

Without arguments it uses tests/ops/fixtures/{gateway,dispatcher}.prom, written
from docs/contract-notes.md; CI points it at real processes with --metrics-url.
Ends with `N passed, N failed`; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, Results, ensure_venv, promtool  # noqa: E402

ensure_venv(["yaml", "promql_parser"])
import promql_parser as pp  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
ALERTS = REPO / "deploy/prometheus/alerts.yml"
PROM_RULE = REPO / "k8s/base/monitoring/prometheusrule.yaml"
DASHBOARDS = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
ALERT_TESTS = HERE / "alerts_test.yml"
OPS_DOC = REPO / "docs/operations.md"
FIXTURES = [HERE / "fixtures/gateway.prom", HERE / "fixtures/dispatcher.prom"]

# Series Prometheus itself produces for every target or rule.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
             "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"}
# Labels attached by service discovery / relabelling, not by the exporter.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint", "node", "cluster",
                 "prometheus", "alertname", "alertstate", "severity"}
SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's built-in interval variables, replaced before parsing.
GRAFANA_DURATIONS = re.compile(r"\$\{?__(rate_interval|interval|range|interval_ms|range_s)\}?")


# ---------------------------------------------------------------------- exposition

@dataclass
class Catalogue:
    """What the scrapes export: sample names, family types, label names per sample."""
    samples: dict[str, set[str]] = field(default_factory=dict)   # sample name -> label names
    types: dict[str, str] = field(default_factory=dict)          # family -> counter|gauge|histogram|summary|untyped
    sources: list[str] = field(default_factory=list)

    def add(self, text: str, source: str) -> None:
        self.sources.append(source)
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
                if m:
                    self.types[m.group(1)] = m.group(2)
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s+\S+", line)
            if not m:
                continue
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"', m.group(3) or ""))
            self.samples.setdefault(m.group(1), set()).update(labels)

    def resolve(self, name: str) -> tuple[bool, str, set[str]]:
        """(exists, why-not, label names) for a name used in a query."""
        if name in self.samples and not name.endswith(SUFFIXES):
            return True, "", self.samples[name]
        for sfx in SUFFIXES:
            if name.endswith(sfx):
                family = name[: -len(sfx)]
                ftype = self.types.get(family)
                if ftype == "histogram" or (ftype == "summary" and sfx != "_bucket"):
                    labels = set()
                    for s, ls in self.samples.items():
                        if s.startswith(family) and s[len(family):] in SUFFIXES + ("",):
                            labels |= ls
                    if sfx != "_bucket":
                        labels.discard("le")
                    return True, "", labels
                if ftype == "summary" and sfx == "_bucket":
                    return False, f"{family} is exported as a summary; histogram_quantile needs a histogram (set buckets)", set()
                if name in self.samples:  # untyped exposition
                    return True, "", self.samples[name]
                if ftype:
                    return False, f"{family} is a {ftype}, it has no {sfx} series", set()
        if name in self.samples:
            return True, "", self.samples[name]
        return False, "not exported by any scrape given", set()


def load_catalogue(sources: list[str]) -> Catalogue:
    cat = Catalogue()
    for src in sources:
        if re.match(r"https?://", src):
            with urllib.request.urlopen(src, timeout=10) as r:  # noqa: S310 (operator-given URL)
                cat.add(r.read().decode("utf-8", "replace"), src)
        else:
            cat.add(Path(src).read_text(), src)
    return cat


# ------------------------------------------------------------------------- PromQL

@dataclass
class Selector:
    name: str | None
    labels: set[str]
    regex_name: bool = False


@dataclass
class Extracted:
    selectors: list[Selector]
    groupings: list[tuple[list[str], list[Selector]]]   # by/without labels with the selectors under them


def extract(expr: str) -> Extracted:
    """Metric names and label names an expression uses, from the parsed AST.

    Function names, aggregation operators, keywords, label values, durations and
    strings never show up as metric names, because only VectorSelector nodes
    (inside matrix selectors and subqueries too) are read.
    """
    ast = pp.parse(expr)
    selectors: list[Selector] = []
    groupings: list[tuple[list[str], list[Selector]]] = []

    def collect(node) -> list[Selector]:
        found: list[Selector] = []

        def visit(n):
            if isinstance(n, pp.VectorSelector):
                ms = list(n.matchers.matchers) if n.matchers else []
                name = n.name
                regex = False
                for m in ms:
                    if m.name == "__name__":
                        if "Equal" in str(m.op) and "Not" not in str(m.op):
                            name = m.value
                        else:
                            regex = True
                found.append(Selector(name, {m.name for m in ms if m.name != "__name__"}, regex))
        pp.walk(node, visit)
        return found

    def visit_agg(n):
        if isinstance(n, pp.AggregateExpr) and n.modifier is not None:
            labels = list(n.modifier.labels or [])
            if labels:
                groupings.append((labels, collect(n.expr)))

    selectors = collect(ast)
    pp.walk(ast, visit_agg)
    return Extracted(selectors, groupings)


def self_test_extractor() -> list[str]:
    cases = {
        'histogram_quantile(0.99, sum by (le) (rate(kurir_delivery_latency_seconds_bucket{job="a"}[5m])))':
            {"kurir_delivery_latency_seconds_bucket"},
        'sum(rate(x_total{code=~"Unavailable|Internal"}[5m])) / on() group_left() sum(rate(y_total[5m])) > 0.05':
            {"x_total", "y_total"},
        'absent(up{job="kurir-gateway"}) or sum(up) == 0': {"up"},
        'max_over_time(rate(z_total[1m])[10m:1m]) and on(method) {__name__="w_seconds_count"}': {"z_total", "w_seconds_count"},
        'label_replace(g offset 5m, "dst", "$1", "src", "(.*)")': {"g"},
        'count without (instance) (clamp_min(sum_total, 0))': {"sum_total"},
    }
    errors = []
    for expr, want in cases.items():
        got = {s.name for s in extract(expr).selectors}
        if got != want:
            errors.append(f"{expr!r}: got {sorted(got)}, want {sorted(want)}")
    g = extract('sum by (reason, le) (rate(d_total{reason!="x"}[5m]))').groupings
    if not g or g[0][0] != ["reason", "le"]:
        errors.append(f"by-labels not extracted: {g}")
    return errors


# ------------------------------------------------------------------------ sources

def rule_exprs(groups: list) -> tuple[list[tuple[str, str]], set[str]]:
    exprs, recorded = [], set()
    for g in groups:
        for r in g.get("rules", []):
            exprs.append((r.get("alert") or r.get("record"), r["expr"]))
            if r.get("record"):
                recorded.add(r["record"])
    return exprs, recorded


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    dash = json.loads(path.read_text())
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r}/{t.get('refId')}", GRAFANA_DURATIONS.sub("5m", t["expr"])))
    for v in (dash.get("templating") or {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.+),\s*\w+\)\s*$", q or "")
        if m:
            out.append((f"variable ${v['name']}", m.group(1)))
    return out


def check_exprs(res: Results, title: str, exprs: list[tuple[str, str]], cat: Catalogue, recorded: set[str]) -> set[str]:
    errors, names = [], set()
    for where, expr in exprs:
        try:
            ex = extract(expr)
        except Exception as e:  # parser error text is the useful part
            errors.append(f"{where}: does not parse: {e}")
            continue
        labels_by_sel = {}
        for sel in ex.selectors:
            if sel.regex_name or not sel.name:
                errors.append(f"{where}: selector without a fixed metric name cannot be checked")
                continue
            names.add(sel.name)
            if sel.name in SYNTHETIC or sel.name in recorded:
                labels_by_sel[id(sel)] = None
                continue
            ok, why, labels = cat.resolve(sel.name)
            if not ok:
                errors.append(f"{where}: {sel.name}: {why}")
                continue
            labels_by_sel[id(sel)] = labels
            allowed = labels | TARGET_LABELS
            for lab in sel.labels - allowed:
                errors.append(f"{where}: {sel.name} has no label {lab!r} (exported labels: {sorted(labels) or 'none'})")
        for by, sels in ex.groupings:
            union = set(TARGET_LABELS)
            for s in sels:
                known = labels_by_sel.get(id(s))
                if known is None:
                    union = None
                    break
                union |= known
            if union is None:
                continue
            for lab in by:
                if lab not in union:
                    errors.append(f"{where}: groups by {lab!r}, which none of its series carry")
    errors = list(dict.fromkeys(errors))
    res.check(f"{title}: {len(exprs)} expressions, {len(names)} metric names, all exported with the labels used", errors)
    return names


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scrapes", nargs="*", help="files or URLs with a /metrics scrape")
    ap.add_argument("--metrics-url", action="append", default=[], help="a live /metrics URL (repeatable)")
    ap.add_argument("--metrics-file", action="append", default=[], help="a saved scrape (repeatable)")
    ap.add_argument("--no-promtool", action="store_true", help="skip promtool check/test rules")
    args = ap.parse_args()
    res = Results()

    sources = [*args.scrapes, *args.metrics_file, *args.metrics_url] or [str(p) for p in FIXTURES]
    try:
        cat = load_catalogue(sources)
    except Exception as e:
        res.fail("read metrics", f"{e}")
        return res.finish()
    res.check(f"read {len(cat.samples)} series names from {len(sources)} scrape(s): "
              + ", ".join(Path(s).name if not s.startswith("http") else s for s in sources),
              None if cat.samples else "no samples found")

    res.check("PromQL extractor self-test", self_test_extractor())

    alerts_groups = yaml.safe_load(ALERTS.read_text())["groups"]
    alert_exprs, recorded = rule_exprs(alerts_groups)
    used = check_exprs(res, "alerts.yml", alert_exprs, cat, recorded)

    rule = yaml.safe_load(PROM_RULE.read_text())
    rule_groups = rule["spec"]["groups"]
    pr_exprs, pr_recorded = rule_exprs(rule_groups)
    used |= check_exprs(res, "PrometheusRule", pr_exprs, cat, pr_recorded)
    res.check("PrometheusRule groups identical to alerts.yml", None if rule_groups == alerts_groups else
              "differ; run python3 tests/ops/sync_rules.py --write")

    for dash in DASHBOARDS:
        used |= check_exprs(res, f"dashboard {dash.name}", dashboard_exprs(dash), cat, recorded)

    required = {"kurir_delivery_latency_seconds_bucket", "kurir_gateway_dropped_total", "kurir_backend_errors_total",
                "kurir_dispatcher_requests_total", "kurir_gateway_ready", "up"}
    res.check("alerts cover gateway down, p99 latency, drops, backend errors, readiness, dispatcher errors",
              sorted(f"no rule uses {n}" for n in required - {n for _, e in alert_exprs for n in
                                                               (s.name for s in extract(e).selectors)}))

    # Every alert has runbook text, and the runbook anchor exists.
    errors = []
    doc = OPS_DOC.read_text() if OPS_DOC.exists() else ""
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+\s+(.+)$", doc, re.M)}
    for g in alerts_groups:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            rb = (r.get("annotations") or {}).get("runbook", "")
            if not rb.startswith("docs/operations.md#"):
                errors.append(f"{r['alert']}: annotations.runbook must point into docs/operations.md")
            elif rb.split("#", 1)[1] not in anchors:
                errors.append(f"{r['alert']}: docs/operations.md has no section #{rb.split('#', 1)[1]}")
            if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                errors.append(f"{r['alert']}: severity must be critical|warning|info")
    res.check("every alert has a severity and a runbook section in docs/operations.md", errors)

    if not args.no_promtool:
        tool = promtool()
        if not tool:
            res.fail("promtool", "promtool unavailable (apt-get download prometheus failed); use --no-promtool to skip")
        else:
            r = subprocess.run([tool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
            res.check("promtool check rules deploy/prometheus/alerts.yml", None if r.returncode == 0 else r.stdout + r.stderr)
            r = subprocess.run([tool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, cwd=HERE)
            res.check("promtool test rules tests/ops/alerts_test.yml (each alert fires / stays quiet as intended)",
                      None if r.returncode == 0 else r.stdout + r.stderr)
            tested = set(re.findall(r"alertname:\s*(\w+)", ALERT_TESTS.read_text()))
            alerts = {r["alert"] for g in alerts_groups for r in g["rules"] if "alert" in r}
            res.check("every alert has a promtool unit test", sorted(f"untested: {a}" for a in alerts - tested))
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
