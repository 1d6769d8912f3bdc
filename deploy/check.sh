#!/usr/bin/env bash
# Checks the observability assets in deploy/: the Prometheus alerting rules and
# their unit tests, the example Prometheus configuration, and the Grafana
# dashboard (valid JSON, layout, datasource, PromQL syntax, only metric
# names failway exports, and every query of a service's series filtering on
# $service); and that the failway binary links only what the
# image's distroless/cc-debian12 base ships (glibc, libm, libgcc), checked
# with ldd on $FAILWAY_BIN (default: target/release/failway, else
# target/debug/failway).
#
# Needs promtool (Debian/Ubuntu package "prometheus") and python3 (standard
# library only). Starts no server. Run from anywhere; exits non-zero, naming
# each failed check, if any check fails.
set -euo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prom="$deploy/prometheus"
dashboard="$deploy/grafana/failway.json"
failed=()

run() {
    local name="$1"
    shift
    echo "==> $name"
    if "$@"; then
        echo "ok: $name"
    else
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
}

if command -v promtool >/dev/null 2>&1; then
    run "promtool check rules alerts.yaml" promtool check rules "$prom/alerts.yaml"
    # Rule files in the unit tests are resolved against the test file's folder.
    run "promtool test rules alerts_test.yaml" promtool test rules "$prom/alerts_test.yaml"
    # Also checks the rule files it names (alerts.yaml, next to it).
    run "promtool check config prometheus.yml" promtool check config "$prom/prometheus.yml"
else
    echo "FAILED: promtool not found (install the Debian package \"prometheus\")" >&2
    failed+=("promtool available")
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Static checks of the dashboard and the alert expressions. Writes every
# dashboard expression, with Grafana's variables replaced, as a recording rule
# to $tmp/dashboard_rules.yaml so promtool can check its PromQL syntax.
dashboard_static() {
    python3 - "$dashboard" "$prom/alerts.yaml" "$tmp/dashboard_rules.yaml" <<'PY'
import json
import re
import sys

dashboard_path, alerts_path, rules_out = sys.argv[1:4]

# docs/design.md §7: the failway_ metrics, by name.
FAILWAY = {
    "failway_mode", "failway_mode_transitions_total",
    "failway_read_only_deadline_timestamp_seconds", "failway_failback_blocked",
    "failway_region_healthy", "failway_health_checks_total", "failway_requests_total",
    "failway_writes_blocked_total", "failway_writes_accepted_on_replica_total",
    "failway_outcome_unknown_total", "failway_retries_total",
    "failway_retry_budget_exhausted_total", "failway_rewrite_misses_total",
    "failway_config_reloads_total", "failway_unrouted_requests_total",
    "failway_key_pair_interchangeable", "failway_key_pair_checks_total",
}
# The process's and listeners' families; every other failway_ family is a
# service's and carries the label `service`.
UNLABELLED = {"failway_config_reloads_total", "failway_unrouted_requests_total"}
HISTOGRAMS = {"failway_request_duration_seconds"}
ALLOWED = FAILWAY | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")} | {"up"}

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan",
    # Aggregations may be followed by a by/without clause instead of "(".
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
errors = []


def metric_names(expr):
    """Identifiers in a PromQL expression that name metrics: not functions or
    aggregations (followed by "("), not keywords, not label names."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def check_names(where, expr):
    for name in sorted(metric_names(expr)):
        if name not in ALLOWED and not name.startswith("process_"):
            errors.append(f"{where}: unknown metric {name!r} in: {expr}")


# --- dashboard ---------------------------------------------------------------
try:
    with open(dashboard_path) as f:
        dash = json.load(f)
except (OSError, ValueError) as err:
    sys.exit(f"{dashboard_path}: not valid JSON: {err}")

for key in ("title", "uid", "panels", "templating", "schemaVersion"):
    if key not in dash:
        errors.append(f"dashboard: missing {key!r}")

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource")
if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    errors.append("dashboard: needs a 'datasource' variable of type datasource (prometheus)")
for name in ("job", "instance", "service"):
    if name not in variables:
        errors.append(f"dashboard: missing template variable {name!r}")

DS_UID = "${datasource}"
exprs = []  # (where, expr)
for name, var in variables.items():
    if var.get("type") != "query":
        continue
    if (var.get("datasource") or {}).get("uid") != DS_UID:
        errors.append(f"variable {name}: datasource must be {DS_UID}")
    q = var.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
    if m:
        exprs.append((f"variable {name}", m.group(1)))
    else:
        errors.append(f"variable {name}: expected label_values(SELECTOR, LABEL), got {q!r}")

for ann in dash.get("annotations", {}).get("list", []):
    if ann.get("builtIn"):
        continue
    if (ann.get("datasource") or {}).get("uid") != DS_UID:
        errors.append(f"annotation {ann.get('name')}: datasource must be {DS_UID}")
    if ann.get("expr"):
        exprs.append((f"annotation {ann.get('name')}", ann["expr"]))

ids = set()
cells = {}
for p in dash.get("panels", []):
    title = p.get("title", "?")
    where = f"panel {title!r}"
    pid = p.get("id")
    if pid in ids:
        errors.append(f"{where}: duplicate id {pid}")
    ids.add(pid)
    g = p.get("gridPos") or {}
    if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
        errors.append(f"{where}: gridPos needs integer x, y, w, h")
        continue
    if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24 or g["h"] < 1:
        errors.append(f"{where}: gridPos outside the 24-column grid: {g}")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                errors.append(f"{where}: overlaps panel {cells[(x, y)]!r}")
                break
            cells[(x, y)] = title
        else:
            continue
        break
    if p.get("type") == "row":
        continue
    if not p.get("description"):
        errors.append(f"{where}: no description")
    if (p.get("datasource") or {}).get("uid") != DS_UID:
        errors.append(f"{where}: datasource must be {DS_UID}")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{where}: no queries")
    for t in targets:
        if (t.get("datasource") or {}).get("uid") != DS_UID:
            errors.append(f"{where} {t.get('refId')}: datasource must be {DS_UID}")
        if not t.get("expr"):
            errors.append(f"{where} {t.get('refId')}: empty expr")
            continue
        if 'job=~"$job"' not in t["expr"] or 'instance=~"$instance"' not in t["expr"]:
            errors.append(f"{where} {t.get('refId')}: does not filter on $job and $instance")
        for sel in re.finditer(r"\b(failway_\w+)\{([^}]*)\}", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", sel.group(1))
            if base not in UNLABELLED and 'service=~"$service"' not in sel.group(2):
                errors.append(f"{where} {t.get('refId')}: {sel.group(1)} does not filter on $service")
        exprs.append((f"{where} {t.get('refId')}", t["expr"]))

for where, expr in exprs:
    check_names(where, expr)

# --- alert expressions (block or one-line `expr:` values) ---------------------
with open(alerts_path) as f:
    lines = f.read().splitlines()
i = 0
while i < len(lines):
    m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
    i += 1
    if not m:
        continue
    indent, rest = len(m.group(1)), m.group(2).strip()
    if rest in ("|", "|-", ">", ">-"):
        body = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i].strip())
            i += 1
        rest = " ".join(body)
    elif rest[:1] in ("'", '"'):
        rest = rest[1:-1]
    check_names(f"{alerts_path} line {i}", rest)

# --- dashboard expressions as recording rules, for promtool's parser ----------
SUBST = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
         "$job": ".+", "$instance": ".+", "$service": ".+"}
with open(rules_out, "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for n, (where, expr) in enumerate(exprs):
        if where.startswith("variable"):
            continue
        for k, v in SUBST.items():
            expr = expr.replace(k, v)
        out.write(f"      - record: dashboard:expr_{n}\n        expr: {json.dumps(expr)}\n")

if errors:
    for e in errors:
        print(e, file=sys.stderr)
    sys.exit(1)
print(f"{len(exprs)} dashboard expressions use only known metric names")
PY
}

# distroless/cc-debian12 has glibc (libc, libm, and the libpthread, libdl,
# librt and libutil stubs), the dynamic loader and libgcc_s; nothing else.
linked_libs() {
    local bin="$1"
    if [[ ! -x "$bin" ]]; then
        echo "no binary at $bin (build it first: cargo build --release --locked)" >&2
        return 1
    fi
    local bad
    bad="$(ldd "$bin" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|/lib/ld-linux-aarch64\.so\.1|ld-linux.*|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libutil\.so\.1)$' || true)"
    if [[ -n "$bad" ]]; then
        echo "$bin links libraries distroless/cc-debian12 does not ship:" >&2
        echo "$bad" >&2
        return 1
    fi
    ldd "$bin"
}
root="$(cd "$deploy/.." && pwd)"
bin="${FAILWAY_BIN:-}"
if [[ -z "$bin" ]]; then
    bin="$root/target/release/failway"
    [[ -x "$bin" ]] || bin="$root/target/debug/failway"
fi
run "binary links only glibc, libm and libgcc (ldd $bin)" linked_libs "$bin"

run "dashboard JSON, layout and metric names" dashboard_static
if [[ -s "$tmp/dashboard_rules.yaml" ]] && command -v promtool >/dev/null 2>&1; then
    run "dashboard PromQL syntax (promtool)" promtool check rules "$tmp/dashboard_rules.yaml"
fi

if ((${#failed[@]})); then
    echo >&2
    echo "deploy/check.sh: ${#failed[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    exit 1
fi
echo
echo "deploy/check.sh: all checks passed"
