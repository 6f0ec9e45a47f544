"""Every alert's runbook_url points at a heading that exists in README.md."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tlsprobe.alerting.generate import DEFAULT_RUNBOOK_BASE
from tlsprobe.model import CHECK_NAMES

ROOT = Path(__file__).resolve().parents[2]
PREFIX = DEFAULT_RUNBOOK_BASE + "#"


def github_anchor(heading: str) -> str:
    """GitHub's slug: lower-case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def readme_anchors() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def runbook_urls() -> list[tuple[str, str]]:
    """(alert, url); a URL templated on the check label stands for every check's heading."""
    rules = yaml.safe_load((ROOT / "deploy/prometheus/tlsprobe.rules.yml").read_text())
    urls = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            url = rule["annotations"]["runbook_url"]
            if "{{ $labels.check }}" in url:
                urls += [
                    (rule["alert"], url.replace("{{ $labels.check }}", c)) for c in CHECK_NAMES
                ]
            else:
                urls.append((rule["alert"], url))
    return urls


def test_anchor_slugs_follow_github() -> None:
    assert github_anchor("Checks and how to fix them") == "checks-and-how-to-fix-them"
    assert github_anchor("chain_trusted") == "chain_trusted"
    assert github_anchor("Alerts, Alertmanager and Grafana") == "alerts-alertmanager-and-grafana"


def test_every_runbook_url_resolves_to_a_readme_heading() -> None:
    anchors = readme_anchors()
    urls = runbook_urls()
    assert urls, "no alerts found"
    missing = [
        (alert, url)
        for alert, url in urls
        if not url.startswith(PREFIX) or url.removeprefix(PREFIX) not in anchors
    ]
    assert not missing
