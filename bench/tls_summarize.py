#!/usr/bin/env python3
"""Summarize bench/tls-compare.sh results: medians over repetitions per (scenario, target).

Usage: tls_summarize.py RESULT_DIR   (reads raw.tsv and tls.tsv)

Columns:
  req/s       median over reps; "spread" = (max-min)/median of the reps
  vs nginx    median req/s / median req/s of nginx in the same scenario;
              "paired" = min..max over reps of req/s_rep / nginx_req/s_rep (same rep)
  p50/p99     median over reps of wrk's latency percentiles (ms)
  CPU us/req  median proxy CPU time (user+sys, all its processes) per request;
              "vs nginx" = that median / nginx's
  peak RSS    median over reps of the proxy's VmHWM (sum over its processes, reset before each run)
  errors      wrk socket errors + non-2xx answers, summed over reps
  log lines   lines the proxy logged during its runs, summed over reps
  redone      runs redone by the noise guards, summed over reps
Then the lines in DIR/logs/ (failway.out, haproxy.out, nginx-tls.error.log),
counted by message (time stamps and peer addresses left out).
"""
import csv
import os
import re
import statistics as st
import sys
from collections import defaultdict


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def fmt(x, nd=0, unit=""):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}{unit}"


def main(d):
    with open(os.path.join(d, "raw.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    groups = defaultdict(list)
    order_s, order_t = [], []
    for r in rows:
        groups[(r["scenario"], r["target"])].append(r)
        if r["scenario"] not in order_s:
            order_s.append(r["scenario"])
        if r["target"] not in order_t:
            order_t.append(r["target"])

    out = []
    tls = os.path.join(d, "tls.tsv")
    if os.path.exists(tls):
        with open(tls) as f:
            t_rows = list(csv.DictReader(f, delimiter="\t"))
        out.append("### negotiated by `openssl s_client -tls1_3`\n")
        out.append("| target | port | protocol | cipher | group | verify | same certificate |")
        out.append("|---|---:|---|---|---|---|---|")
        for r in t_rows:
            out.append("| {target} | {port} | {protocol} | {cipher} | {group} | {verify} | {same_cert} |".format(**r))

    for s in order_s:
        nginx = groups.get((s, "nginx"), [])
        n_by_rep = {r["rep"]: num(r["rps"]) for r in nginx}
        n_rps = med([num(r["rps"]) for r in nginx])
        n_cpu = med([num(r["cpu_us_per_req"]) for r in nginx])
        reps = max(len(groups.get((s, t), [])) for t in order_t)
        out.append(f"\n### scenario {s}: TLS 1.3, HTTP/1.1 keep-alive (reps = {reps})\n")
        out.append("| target | req/s | spread | vs nginx | paired | p50 ms | p99 ms | CPU us/req | CPU vs nginx | peak RSS MiB | errors | log lines | redone |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in order_t:
            g = groups.get((s, t))
            if not g:
                continue
            rps = [num(r["rps"]) for r in g if num(r["rps"]) is not None]
            rm = med(rps)
            spread = (max(rps) - min(rps)) / rm * 100 if rm and len(rps) > 1 else None
            paired = [num(r["rps"]) / n_by_rep[r["rep"]] for r in g
                      if n_by_rep.get(r["rep"]) and num(r["rps"]) is not None]
            pr = f"{min(paired):.2f}..{max(paired):.2f}" if len(paired) > 1 else "-"
            cpu = med([num(r["cpu_us_per_req"]) for r in g])
            rss = med([num(r["peak_rss_kb"]) for r in g])
            out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                t, fmt(rm), fmt(spread, 1, "%"),
                fmt(rm / n_rps if rm and n_rps else None, 2), pr,
                fmt(med([num(r["p50_ms"]) for r in g]), 3),
                fmt(med([num(r["p99_ms"]) for r in g]), 3),
                fmt(cpu, 1), fmt(cpu / n_cpu if cpu and n_cpu else None, 2),
                fmt(rss / 1024 if rss else None, 1),
                sum(int(float(r["errors"] or 0)) for r in g),
                sum(int(float(r["log_lines"] or 0)) for r in g),
                sum(int(float(r["tries"] or 1)) - 1 for r in g)))
    logs = [("failway", "failway.out"), ("haproxy", "haproxy.out"), ("nginx", "nginx-tls.error.log")]
    counts = []
    for t, name in logs:
        p = os.path.join(d, "logs", name)
        if not os.path.exists(p):
            continue
        c = defaultdict(int)
        with open(p, errors="replace") as f:
            for line in f:
                line = re.sub(r"^\S+Z\s+", "", line.strip())            # failway (tracing) time stamp
                line = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", line)  # nginx
                line = re.sub(r"\d+#\d+: \*\d+ ", "", line)
                line = re.sub(r"(peer|client)[=:] ?[0-9.:\[\]a-f]+", r"\1=...", line)
                if line:
                    c[line[:200]] += 1
        counts += [(t, n, m) for m, n in sorted(c.items(), key=lambda kv: -kv[1])]
    if counts:
        out.append("\n### proxy log lines over the whole run, by message\n")
        out.append("| target | lines | message |")
        out.append("|---|---:|---|")
        for t, n, m in counts:
            out.append("| {} | {} | {} |".format(t, n, m.replace("|", "\\|")))
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
