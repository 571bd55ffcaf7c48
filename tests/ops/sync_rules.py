#!/usr/bin/env python3
"""Keep k8s/base/monitoring/prometheusrule.yaml identical to deploy/prometheus/alerts.yml.

  python3 tests/ops/sync_rules.py --write   # regenerate the PrometheusRule
  python3 tests/ops/sync_rules.py           # check only; exit 1 if out of date

alerts.yml is the source of truth (plain Prometheus, used by docker-compose and
`promtool test rules`); the PrometheusRule wraps the same groups for
prometheus-operator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO, Results, ensure_venv  # noqa: E402

ensure_venv(["yaml"])
import yaml  # noqa: E402

ALERTS = REPO / "deploy/prometheus/alerts.yml"
RULE = REPO / "k8s/base/monitoring/prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by tests/ops/sync_rules.py --write.
# Do not edit: change alerts.yml and regenerate (CI checks they are identical).
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(groups: list) -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "kurir",
            "labels": {"app.kubernetes.io/name": "kurir", "role": "alert-rules"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="regenerate the PrometheusRule")
    args = ap.parse_args()
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    want = render(groups)
    if args.write:
        RULE.write_text(want)
        print(f"wrote {RULE.relative_to(REPO)}")
    res = Results()
    have = yaml.safe_load(RULE.read_text()) if RULE.exists() else None
    errors = []
    if have is None:
        errors.append(f"{RULE.relative_to(REPO)} is missing")
    elif have.get("spec", {}).get("groups") != groups:
        errors.append("PrometheusRule spec.groups differ from alerts.yml groups; run: python3 tests/ops/sync_rules.py --write")
    res.check("PrometheusRule carries exactly the rules of alerts.yml", errors)
    return res.finish()


if __name__ == "__main__":
    sys.exit(main())
