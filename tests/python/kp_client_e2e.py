#!/usr/bin/env python3
"""The official Key Protect Python client (keyprotect 3.x) through failway.

Drives a failway that stands in front of two `failway sim` regions (started
by tests/e2e/tools/python_client.rs): create a root key, wrap, unwrap and list through
the primary; put the primary in an outage; wait for failway's read-only
failover; unwrap the earlier ciphertext and list keys through the replica;
check that a create is refused with a 409 ApiException whose message names
the read-only state.

Uses BearerTokenAuthenticator (no IAM) and ignores proxy settings: nothing
leaves 127.0.0.1. Exits 0 when every check holds, 1 with a message naming
the failed check otherwise.
"""

import argparse
import base64
import io
import json
import os
import sys
import time
import urllib.request

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

KEY_TYPE = "application/vnd.ibm.kms.key+json"
WAIT_SECONDS = 15.0

# urllib without proxies from the environment, for the admin and control ports.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failure(Exception):
    """A check that did not hold."""


def expect(cond, message):
    if not cond:
        raise Failure(message)


def step(text):
    print(f"[kp-client] {text}", flush=True)


def body(obj):
    return io.BytesIO(json.dumps(obj).encode())


def http_json(method, url, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    with OPENER.open(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def wait_for(what, predicate):
    """Polls `predicate` until it returns a true value, up to WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {WAIT_SECONDS}s")
        time.sleep(0.05)


def region(resp):
    return resp.get_headers().get("failway-region")


def result_dict(resp, what):
    result = resp.get_result()
    expect(
        isinstance(result, dict),
        f"{what}: get_result() is {type(result).__name__}, not a dict "
        f"(Content-Type {resp.get_headers().get('content-type')!r})",
    )
    return result


def key_ids(resp):
    return [k.get("id") for k in result_dict(resp, "list keys").get("resources", [])]


def run(args):
    kp = IbmKeyProtectApiV2(authenticator=BearerTokenAuthenticator("any-token"))
    kp.set_service_url(args.url)
    kp.get_http_client().trust_env = False
    inst = args.instance

    created = kp.create_key(
        inst,
        body({
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{"type": KEY_TYPE, "name": "py-root", "extractable": False}],
        }),
        prefer="return=representation",
    )
    expect(created.get_status_code() == 201, f"create: status {created.get_status_code()}")
    expect(region(created) == "primary", f"create: failway-region {region(created)!r}")
    key_id = result_dict(created, "create")["resources"][0]["id"]
    step(f"created root key {key_id} on the primary")

    dek = base64.b64encode(os.urandom(32)).decode()
    wrapped = kp.wrap_key(key_id, inst, key_action_wrap_body=body({"plaintext": dek}))
    expect(wrapped.get_status_code() == 200, f"wrap: status {wrapped.get_status_code()}")
    ciphertext = result_dict(wrapped, "wrap")["ciphertext"]
    step("wrapped a DEK")

    unwrapped = kp.unwrap_key(key_id, inst, body({"ciphertext": ciphertext}))
    expect(result_dict(unwrapped, "unwrap")["plaintext"] == dek, "unwrap: another plaintext")
    expect(region(unwrapped) == "primary", f"unwrap: failway-region {region(unwrapped)!r}")
    step("unwrapped it on the primary")

    listed = kp.get_keys(inst, limit=10)
    expect(key_id in key_ids(listed), f"list: {key_id} missing on the primary")
    step("listed keys on the primary")

    wait_for(
        "replication to the replica",
        lambda: http_json("GET", f"{args.replica_control}/stats")["replicated_in"] >= 1,
    )
    step("the key reached the replica")

    http_json("POST", f"{args.control}/faults", {"outage": True})
    step("primary outage switched on")
    wait_for(
        "failway mode failover_read_only",
        lambda: http_json("GET", f"{args.admin}/status")["mode"] == "failover_read_only",
    )
    step("failway reports failover_read_only")

    unwrapped = kp.unwrap_key(key_id, inst, body({"ciphertext": ciphertext}))
    expect(region(unwrapped) == "replica", f"unwrap: failway-region {region(unwrapped)!r}")
    expect(
        result_dict(unwrapped, "unwrap")["plaintext"] == dek,
        "unwrap on the replica: another plaintext",
    )
    step("unwrapped the earlier ciphertext on the replica")

    listed = kp.get_keys(inst, limit=10)
    expect(region(listed) == "replica", f"list: failway-region {region(listed)!r}")
    expect(key_id in key_ids(listed), f"list: {key_id} missing on the replica")
    step("listed keys on the replica")

    try:
        kp.create_key(
            inst,
            body({
                "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
                "resources": [{"type": KEY_TYPE, "name": "refused", "extractable": False}],
            }),
        )
    except ApiException as e:
        expect(e.status_code == 409, f"refused create: status {e.status_code}: {e.message}")
        expect(
            "read-only" in str(e.message),
            f"refused create: the message does not name the read-only state: {e.message!r}",
        )
        mode = e.http_response.headers.get("failway-mode")
        expect(mode == "failover_read_only", f"refused create: failway-mode {mode!r}")
        step(f"create refused: {e}")
    else:
        raise Failure("create during read-only failover was not refused")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="failway's proxy URL")
    parser.add_argument("--instance", required=True, help="bluemix-instance GUID")
    parser.add_argument("--control", required=True, help="the primary simulator's control URL")
    parser.add_argument("--replica-control", required=True, help="the replica simulator's control URL")
    parser.add_argument("--admin", required=True, help="failway's admin URL")
    args = parser.parse_args()
    try:
        run(args)
    except Failure as e:
        print(f"[kp-client] FAIL: {e}", file=sys.stderr, flush=True)
        return 1
    except ApiException as e:
        print(f"[kp-client] FAIL: unexpected {e}", file=sys.stderr, flush=True)
        return 1
    except OSError as e:
        print(f"[kp-client] FAIL: cannot reach a port: {e}", file=sys.stderr, flush=True)
        return 1
    step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
