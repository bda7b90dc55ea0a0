#!/usr/bin/env python3
"""Send METHOD (GET unless given) to a URL with a Bearer token and no body; print the status
code on the first line, then the body.

Used by interop.rs to read the bridge's /healthz and /metrics, and to POST /admin/drain, from
inside the network namespace the bridge runs in. Exits non-zero when the server cannot be
reached. An https:// URL is verified against OpenSSL's default store, which $SSL_CERT_FILE
replaces (the tests' CA).
"""

import sys
import urllib.error
import urllib.request

url, token = sys.argv[1], sys.argv[2]
method = sys.argv[3] if len(sys.argv) > 3 else "GET"
req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
try:
    with urllib.request.urlopen(req, timeout=5) as resp:
        code, body = resp.status, resp.read()
except urllib.error.HTTPError as err:
    code, body = err.code, err.read()
sys.stdout.write(f"{code}\n{body.decode(errors='replace')}")
