#!/usr/bin/env python3
"""Helpers for ci/monitoring-checks.sh: the chart's PrometheusRule and Grafana dashboard.

Subcommands (each exits 0 on success, 1 with messages on stderr otherwise):
  extract-rules MANIFESTS OUT          the PrometheusRule's spec (its groups) as a plain Prometheus rules file
  lint-alerts RULES                    every alert: severity label, `for`, summary/description/runbook annotations
  metric-names METRICS_RS FILE...      every metric a rules file or a dashboard queries exists: kip_* registered
                                       in METRICS_RS (with the exposition's suffixes), or up, process_*, container_*
  dashboard-lint DASHBOARD             valid JSON; $datasource and $set variables; every panel and target on
                                       ${datasource}; unique panel ids
  dashboard-rules DASHBOARD OUT        each target's expr (Grafana variables substituted) as a recording rule, so
                                       that `promtool check rules OUT` parses every query
  test-coverage RULES TESTS            each alert of RULES has a firing and a not-firing case in the unit tests
  assert-rules RULES CHECK [ARG...]    assertions on a rendered rules file (see ASSERTIONS)
  assert-dashboard-cm MANIFESTS DASHBOARD NAMESPACE KEY VALUE
                                       the dashboard ConfigMap: namespace, sidecar label, the JSON unchanged
"""
import json
import re
import sys

import yaml


class CheckError(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckError(msg)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (expressions, annotations) as literal blocks, as a person writes a rules file."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def dump_yaml(data, path):
    with open(path, "w") as f:
        yaml.dump(data, f, Dumper=_Dumper, sort_keys=False, width=1000)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_rules(path):
    with open(path) as f:
        data = yaml.safe_load(f)
    expect(isinstance(data, dict) and data.get("groups"), f"{path}: no rule groups")
    return [r for g in data["groups"] for r in g.get("rules", [])]


def alerts_of(path):
    return [r for r in load_rules(path) if "alert" in r]


# --- extract-rules -------------------------------------------------------------

def cmd_extract_rules(manifests, out):
    rules = [d for d in load_docs(manifests) if d.get("kind") == "PrometheusRule"]
    expect(len(rules) == 1, f"expected exactly one PrometheusRule, found {len(rules)}")
    pr = rules[0]
    expect(pr.get("apiVersion") == "monitoring.coreos.com/v1", f"apiVersion {pr.get('apiVersion')}")
    groups = pr["spec"]["groups"]
    dump_yaml({"groups": groups}, out)
    n = sum(len(g["rules"]) for g in groups)
    print(f"{len(groups)} group(s), {n} rule(s) of PrometheusRule/{pr['metadata']['name']} -> {out}")


# --- lint-alerts ---------------------------------------------------------------

SEVERITIES = ("critical", "warning", "info")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def cmd_lint_alerts(rules):
    alerts = alerts_of(rules)
    expect(alerts, f"{rules}: no alert")
    problems = []
    names = [a["alert"] for a in alerts]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        problems.append(f"alert names used twice: {sorted(dup)}")
    for a in alerts:
        name = a["alert"]
        sev = (a.get("labels") or {}).get("severity")
        if sev not in SEVERITIES:
            problems.append(f"{name}: severity label {sev!r} is not one of {SEVERITIES}")
        if not DURATION.match(str(a.get("for", ""))):
            problems.append(f"{name}: no `for` duration")
        ann = a.get("annotations") or {}
        for key in ("summary", "description", "runbook"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        if not name.startswith("KubernetesImagePuller"):
            problems.append(f"{name}: alert names start with KubernetesImagePuller")
    expect(not problems, "\n".join(problems))
    for a in alerts:
        print(f"{a['alert']}: severity {a['labels']['severity']}, for {a['for']}")


# --- metric-names --------------------------------------------------------------

def registered_metrics(metrics_rs):
    """The exposition names of the metrics src/metrics.rs registers (prefix kip_, prometheus-client suffixes)."""
    with open(metrics_rs) as f:
        src = f.read()
    struct = re.search(r"pub struct Metrics \{(.*?)\n\}", src, re.S)
    expect(struct, f"{metrics_rs}: no `pub struct Metrics`")
    types = dict(re.findall(r"pub (\w+): ([^\n]+),", struct.group(1)))
    rows = re.findall(r"(\w+) => \"(\w+)\", \"", src)
    expect(rows, f"{metrics_rs}: no `field => \"name\", \"help\";` rows")
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', src)
    expect(prefix, f"{metrics_rs}: no Registry::with_prefix")
    names = {}
    for field, name in rows:
        ty = types.get(field)
        expect(ty, f"{metrics_rs}: field {field} registered but not in struct Metrics")
        base = f"{prefix.group(1)}_{name}"
        if "Histogram" in ty:
            exposed = [base + s for s in ("_bucket", "_sum", "_count")]
        elif "Counter" in ty:
            # The text encoding of prometheus-client appends _total to counters.
            exposed = [base + "_total"]
        else:
            exposed = [base]
        for e in exposed:
            names[e] = ty
    return names


STANDARD = re.compile(r"^(up|process_\w+|container_\w+)$")
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan", "atan2", "start", "end"}


def grafana_substitute(expr):
    """Grafana's variables as a query would see them: intervals as 5m, template variables as `.*`."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    expr = re.sub(r"\$\{\w+(:\w+)?\}|\$\w+|\[\[\w+\]\]", ".*", expr)
    return expr


def metric_names_in(expr):
    """Metric names a PromQL expression selects (strings, matchers, durations and grouping labels removed)."""
    e = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\b(group_left|group_right)\b", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word in KEYWORDS:
            continue
        names.add(word)
    # A selector with only matchers ({__name__="x"}) names its metric there.
    names |= set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return names


def exprs_of_file(path):
    """(where, expr) of a rules file or a Grafana dashboard (its targets and its query variables)."""
    if path.endswith(".json"):
        with open(path) as f:
            dash = json.load(f)
        out = []
        for p in all_panels(dash):
            for t in p.get("targets", []):
                out.append((f"panel {p['id']} {p.get('title')!r} {t.get('refId')}", grafana_substitute(t["expr"])))
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            m = re.match(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", q)
            if m:
                out.append((f"variable {v['name']}", grafana_substitute(m.group(1))))
            else:
                out.append((f"variable {v['name']}", grafana_substitute(q)))
        return out
    return [(r.get("alert") or r.get("record"), r["expr"]) for r in load_rules(path)]


def cmd_metric_names(metrics_rs, *files):
    known = registered_metrics(metrics_rs)
    problems, used = [], set()
    for path in files:
        for where, expr in exprs_of_file(path):
            names = metric_names_in(expr)
            if not names:
                problems.append(f"{path}: {where}: no metric found in {expr!r}")
            for n in sorted(names):
                used.add(n)
                if n not in known and not STANDARD.match(n):
                    problems.append(f"{path}: {where}: metric {n} is neither registered in {metrics_rs} "
                                    f"nor a standard one (up, process_*, container_*)")
    expect(not problems, "\n".join(problems))
    print(f"{len(used)} metric name(s), each registered or standard: {', '.join(sorted(used))}")


# --- dashboard -----------------------------------------------------------------

def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def cmd_dashboard_lint(path):
    with open(path) as f:
        try:
            dash = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckError(f"{path}: not JSON: {e}")
    problems = []
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.append(f"no {key}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for prometheus")
    if "set" not in variables:
        problems.append("no `set` variable")
    ids, targets = [], 0
    want = {"type": "prometheus", "uid": "${datasource}"}
    for p in all_panels(dash):
        ids.append(p.get("id"))
        if p.get("type") == "row":
            continue
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("datasource") != want:
            problems.append(f"{where}: datasource is not {want}")
        if not p.get("targets"):
            problems.append(f"{where}: no target")
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("x", "y", "w", "h")) or gp["x"] + gp["w"] > 24:
            problems.append(f"{where}: gridPos {gp}")
        for t in p.get("targets", []):
            targets += 1
            if t.get("datasource") != want:
                problems.append(f"{where} {t.get('refId')}: datasource is not {want}")
            if not str(t.get("expr", "")).strip():
                problems.append(f"{where} {t.get('refId')}: no expr")
        for t in p.get("targets", []):
            if "$set" not in t.get("expr", "") and "set" in re.findall(r"by \(([^)]*)\)", t.get("expr", "")):
                problems.append(f"{where} {t.get('refId')}: groups by set without the $set filter")
    for v in variables.values():
        if v.get("type") == "query" and v.get("datasource") != want:
            problems.append(f"variable {v['name']}: datasource is not {want}")
    dup = {i for i in ids if ids.count(i) > 1}
    if dup or None in ids:
        problems.append(f"panel ids missing or used twice: {sorted(x for x in dup if x is not None)}")
    expect(not problems, "\n".join(f"{path}: {p}" for p in problems))
    print(f"{path}: {len(ids)} panels, {targets} targets, variables {', '.join(variables)}")


def cmd_dashboard_rules(path, out):
    with open(path) as f:
        dash = json.load(f)
    rules = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            rules.append({"record": f"dashboard:panel_{p['id']}:{t['refId']}", "expr": grafana_substitute(t["expr"])})
    expect(rules, f"{path}: no target")
    dump_yaml({"groups": [{"name": "dashboard-queries", "rules": rules}]}, out)
    print(f"{len(rules)} queries -> {out}")


# --- test-coverage -------------------------------------------------------------

def cmd_test_coverage(rules, tests):
    names = [a["alert"] for a in alerts_of(rules)]
    with open(tests) as f:
        t = yaml.safe_load(f)
    firing, quiet = set(), set()
    for case in t.get("tests", []):
        for a in case.get("alert_rule_test", []) or []:
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
    problems = []
    for n in names:
        if n not in firing:
            problems.append(f"{n}: no unit test where it fires")
        if n not in quiet:
            problems.append(f"{n}: no unit test where it does not fire")
    unknown = (firing | quiet) - set(names)
    if unknown:
        problems.append(f"tests name alerts the rules do not have: {sorted(unknown)}")
    expect(not problems, "\n".join(problems))
    print(f"{len(names)} alerts, each with firing and not-firing cases")


# --- assert-rules --------------------------------------------------------------

def assert_selector(rules, selector):
    """Every selector of every rule carries SELECTOR's matchers."""
    problems = []
    for r in load_rules(rules):
        for sel in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", r["expr"]):
            if selector not in sel[1]:
                problems.append(f"{r.get('alert')}: {sel[0]}{{{sel[1]}}} lacks {selector}")
    expect(not problems, "\n".join(problems))


def assert_alert_labels(rules, key, value):
    for a in alerts_of(rules):
        expect(a["labels"].get(key) == value, f"{a['alert']}: label {key}={value!r} missing")


def assert_runbook_urls(rules, base):
    for a in alerts_of(rules):
        want = base + a["alert"].lower()
        expect(a["annotations"].get("runbook_url") == want, f"{a['alert']}: runbook_url is not {want}")


def assert_no_runbook_urls(rules):
    for a in alerts_of(rules):
        expect("runbook_url" not in a["annotations"], f"{a['alert']}: runbook_url without runbookBaseUrl")


def assert_nodes_excluded(rules, excluded):
    a = [x for x in alerts_of(rules) if x["alert"] == "KubernetesImagePullerPermissionDenied"]
    expect(a, "no KubernetesImagePullerPermissionDenied")
    has = 'resource!="nodes"' in a[0]["expr"]
    expect(has == (excluded == "yes"), f"resource!=\"nodes\" {'missing' if excluded == 'yes' else 'present'}: "
                                       f"{a[0]['expr']}")


ASSERTIONS = {
    "selector": assert_selector,
    "alert-label": assert_alert_labels,
    "runbook-urls": assert_runbook_urls,
    "no-runbook-urls": assert_no_runbook_urls,
    "nodes-excluded": assert_nodes_excluded,
}


def cmd_assert_rules(rules, check, *args):
    expect(check in ASSERTIONS, f"unknown assertion {check}: {', '.join(ASSERTIONS)}")
    ASSERTIONS[check](rules, *args)
    print(f"{check}: holds")


# --- assert-dashboard-cm -------------------------------------------------------

def cmd_assert_dashboard_cm(manifests, dashboard, namespace, key, value):
    cms = [d for d in load_docs(manifests)
           if d.get("kind") == "ConfigMap" and (d["metadata"].get("labels") or {}).get(key) is not None]
    expect(len(cms) == 1, f"expected one ConfigMap labelled {key}, found {len(cms)}")
    cm = cms[0]
    md = cm["metadata"]
    expect(md["labels"][key] == value, f"label {key}={md['labels'][key]!r}, want {value!r}")
    expect(md.get("namespace") == namespace, f"namespace {md.get('namespace')!r}, want {namespace!r}")
    data = cm.get("data") or {}
    expect(list(data) == ["kubernetes-image-puller.json"], f"data keys {list(data)}")
    with open(dashboard) as f:
        want = json.load(f)
    expect(json.loads(data["kubernetes-image-puller.json"]) == want, "the ConfigMap's JSON differs from the file")
    size = len(json.dumps(cm).encode())
    expect(size < 1024 * 1024, f"ConfigMap of {size} bytes: over 1 MiB")
    print(f"ConfigMap/{md['name']} in {namespace}, {key}={value!r}, {size} bytes, dashboard {want['uid']}")


COMMANDS = {
    "extract-rules": cmd_extract_rules,
    "lint-alerts": cmd_lint_alerts,
    "metric-names": cmd_metric_names,
    "dashboard-lint": cmd_dashboard_lint,
    "dashboard-rules": cmd_dashboard_rules,
    "test-coverage": cmd_test_coverage,
    "assert-rules": cmd_assert_rules,
    "assert-dashboard-cm": cmd_assert_dashboard_cm,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[1]](*argv[2:])
    except CheckError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (KeyError, IndexError, TypeError, OSError) as e:
        print(f"unexpected input: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
