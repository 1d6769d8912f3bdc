#!/usr/bin/env python3
"""The operator console in a real Chromium, driven through WebDriver.

Run by tests/e2e/admin/console.rs against a failway it started on loopback
(two fake regions probed every 100 ms, `read_only_window = "60s"`, an admin
token, a probe listener). The primary region is switched off and on through
`<primary>/__kill` and `<primary>/__revive`. Checks, in order:
  1. the admin page shows `primary`; an operator failover reaches the page
     without a reload (the time is measured), and a failback too;
  2. the primary goes down: within 3 s, without a reload, the badge says
     read-only failover and the countdown shows between 0:55 and 1:00;
  3. enable-writes without the token shows the 401; with the token and a
     reason the mode switches and the transitions list shows the reason;
     the token is in no request URL, cookie, storage or the page itself;
  4. the probe listener's page has no form, button or input, and a POST
     from it is refused;
  5. with JavaScript disabled the page still shows the mode;
  6. at a phone's width nothing overflows; once failway stops (the test
     stops it when --out/stop-failway appears), the page says it lost the
     connection. This runs last: failway is gone after it.
Screenshots go to --out. The last line is "all checks passed" and a JSON
line with the measured figures precedes it.
"""

import argparse
import json
import os
import re
import socket
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# Selenium must never look for drivers on the network.
os.environ["SE_OFFLINE"] = "true"
os.environ["SE_AVOID_STATS"] = "true"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(args, profile, javascript=True, width=1280):
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for a in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--window-size={width},1400",
    ]:
        opts.add_argument(a)
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    # chromedriver on a free loopback port; Service stops it by its process.
    service = Service(executable_path=args.chromedriver, port=free_port())
    return webdriver.Chrome(service=service, options=opts)


def wait_for(what, timeout, f, step=0.01):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = f()
            if last:
                return last
        except Exception as e:  # the page may be mid-update
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# The live part of the page is replaced at every snapshot, so elements are
# read in one script call rather than held across calls.
def text(d, selector):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector)


def badge(d):
    return d.execute_script(
        "const e = document.querySelector(\".badge[data-service='default']\");"
        " return e ? e.dataset.mode : null;")


def shot(d, out, name):
    d.save_screenshot(os.path.join(out, f"{name}.png"))


def post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def api_to_page(args, d, token, figures):
    """An operator failover and failback, each timed from the API's answer
    to the page showing it."""
    for action, mode in [("failover", "failover_read_only"), ("failback", "primary")]:
        status = post(f"{args.admin}/admin/{action}", {"reason": f"timing {action}"}, token)
        answered = time.monotonic()
        check(status == 200, f"{action} through the API answers 200 (got {status})")
        wait_for(f"the badge to say {mode}", 3, lambda: badge(d) == mode, step=0.005)
        figures[f"{action}_api_to_page_ms"] = round((time.monotonic() - answered) * 1000, 1)


def outage(args, d, out, figures):
    d.execute_script("window.__noReload = 42;")
    get(f"{args.primary}/__kill")
    killed = time.monotonic()
    wait_for("read-only failover on the page", 3, lambda: badge(d) == "failover_read_only")
    figures["primary_down_to_page_ms"] = round((time.monotonic() - killed) * 1000, 1)
    check(d.execute_script("return window.__noReload;") == 42, "the page updated without a reload")
    label = text(d, ".badge[data-service='default']")
    check(label == "read-only failover", f"the badge reads 'read-only failover' ({label!r})")
    first = text(d, ".countdown")
    m = re.fullmatch(r"(\d+):(\d\d)", first or "")
    check(m is not None and 55 <= int(m[1]) * 60 + int(m[2]) <= 60,
          f"a deadline 60 s ahead shows between 0:55 and 1:00 ({first!r})")
    wait_for("the countdown to run", 3, lambda: text(d, ".countdown") != first)
    print(f"ok: the countdown runs ({first!r} then {text(d, '.countdown')!r})", flush=True)
    shot(d, out, "02-read-only-failover")


def actions(args, d, out, token):
    reason = d.find_element(By.NAME, "reason")
    reason.send_keys("outage confirmed by the on-call")
    d.find_element(By.CSS_SELECTOR, "button[value='enable-writes']").click()
    wait_for("the 401 to show", 3,
             lambda: d.find_element(By.ID, "answer").get_attribute("data-status") == "401")
    check("401" in d.find_element(By.ID, "answer").text, "without the token the page shows the 401")
    check(badge(d) == "failover_read_only", "and the mode did not change")
    shot(d, out, "03-enable-writes-refused-401")
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "button[value='enable-writes']").click()
    wait_for("the 200 to show", 3,
             lambda: d.find_element(By.ID, "answer").get_attribute("data-status") == "200")
    wait_for("read-write failover on the page", 3, lambda: badge(d) == "failover_read_write")
    reasons = d.execute_script(
        "return [...document.querySelectorAll('.transitions .reason')].map(e => e.textContent);")
    check("outage confirmed by the on-call" in reasons, f"the transitions list shows the reason ({reasons})")
    shot(d, out, "04-read-write-failover")


def no_token_leak(d, token):
    urls = d.execute_script(
        "return [location.href].concat(performance.getEntries().map(e => e.name));")
    check(all(token not in u for u in urls), f"the token is in no request URL ({len(urls)} checked)")
    cookies = d.get_cookies()
    check(cookies == [] and d.execute_script("return document.cookie;") == "", "no cookie is set")
    storage = d.execute_script(
        "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)]);")
    check(token not in storage and storage == "[[],[]]", f"web storage is empty ({storage})")
    check(token not in d.page_source, "the token is not in the page")


def probe_page(args, d, out):
    d.get(f"{args.probe}/")
    wait_for("the probe page's badge", 3, lambda: badge(d) == "failover_read_write")
    n = len(d.find_elements(By.CSS_SELECTOR, "form, button, input, select, textarea"))
    check(n == 0, f"the probe listener's page has no form, button or input ({n})")
    status = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/admin/failback', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: JSON.stringify({reason: 'from the probe page', force: true})})
          .then(r => done(r.status), e => done(String(e)));""")
    check(status == 404, f"a POST from the probe page is refused ({status})")
    shot(d, out, "05-probe-listener-read-only")


def without_js(args, out):
    with tempfile.TemporaryDirectory() as profile:
        d = browser(args, profile, javascript=False)
        try:
            d.get(f"{args.admin}/")
            check(badge(d) == "failover_read_write", "without JavaScript the page shows the mode")
            check(not d.find_element(By.ID, "actions").is_displayed(),
                  "without JavaScript no action form shows")
            shot(d, out, "06-no-javascript")
        finally:
            d.quit()


def phone(args, out):
    with tempfile.TemporaryDirectory() as profile:
        d = browser(args, profile)
        try:
            # A phone's viewport (a headless window has a wider minimum).
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                              {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
            d.get(f"{args.admin}/")
            wait_for("the page to go live", 3,
                     lambda: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
            wide = d.execute_script("return document.documentElement.scrollWidth;")
            view = d.execute_script("return window.innerWidth;")
            check(wide <= view + 1, f"at a phone's width nothing overflows (content {wide} px, viewport {view} px)")
            shot(d, out, "07-phone-width")
            # The test stops failway when this file appears.
            open(os.path.join(out, "stop-failway"), "w").close()
            wait_for("the page to say it lost the connection", 20,
                     lambda: d.find_element(By.ID, "conn").get_attribute("data-state") == "lost")
            check("lost" in d.find_element(By.ID, "conn").text.lower(), "with failway stopped, the page says it lost the connection")
            shot(d, out, "08-connection-lost")
        finally:
            d.quit()


def main():
    p = argparse.ArgumentParser()
    for a in ["--admin", "--probe", "--primary", "--token-file", "--out", "--chromium", "--chromedriver"]:
        p.add_argument(a, required=True)
    args = p.parse_args()
    token = open(args.token_file).read().strip()
    os.makedirs(args.out, exist_ok=True)
    figures = {"page_bytes": sum(len(get(f"{args.admin}{p}")) for p in ["/", "/console.css", "/console.js"])}
    with tempfile.TemporaryDirectory() as profile:
        d = browser(args, profile)
        try:
            d.get(f"{args.admin}/")
            check(badge(d) == "primary", "the badge says primary")
            wait_for("the page to go live", 3,
                     lambda: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
            shot(d, out=args.out, name="01-primary")
            api_to_page(args, d, token, figures)
            outage(args, d, args.out, figures)
            actions(args, d, args.out, token)
            no_token_leak(d, token)
            probe_page(args, d, args.out)
        finally:
            d.quit()
    without_js(args, args.out)
    phone(args, args.out)
    print(json.dumps(figures), flush=True)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
