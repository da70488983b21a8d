"""How the web view holds under load: ``python scripts/web_load.py --bundle DIR``.

Starts ``python -m edge synthetic:// http://127.0.0.1:0 --headless`` (from the
working directory's ``edge``), then fires ``--requests`` GET /status.json at
once from as many threads (each a fresh connection, ``--timeout`` seconds) and
prints one JSON line: ok, timed out, refused or reset, other, and the slowest
answer. Run it a few times: the machine's load shows in the figures.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def start(bundle, python):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([python, "-m", "edge", "synthetic://?width=320&height=240",
                             "http://127.0.0.1:0", "--bundle", bundle, "--headless"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    for line in proc.stderr:
        match = re.search(r"web view on http://[^:]+:(\d+)/", line)
        if match:
            return proc, int(match.group(1))
    raise SystemExit("no web view started")


def concurrent_gets(port, count=200, timeout=5.0, path="/status.json"):
    """``[(kind, seconds)]`` of ``count`` GETs of ``path`` sent at the same moment,
    each on a fresh connection: kind "ok" (HTTP 200), "timeout", "refused_or_reset"
    or "other"."""
    results, barrier = [], threading.Barrier(count)
    threads = [threading.Thread(target=one, args=(port, timeout, results, barrier, path))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def one(port, timeout, results, barrier, path="/status.json"):
    barrier.wait()
    started = time.time()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        kind = "ok" if response.status == 200 else "other"
    except socket.timeout:
        kind = "timeout"
    except (ConnectionRefusedError, ConnectionResetError):
        kind = "refused_or_reset"
    except (OSError, http.client.HTTPException):
        kind = "other"
    results.append((kind, time.time() - started))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    proc, port = start(args.bundle, args.python)
    try:
        time.sleep(2.0)
        for _ in range(args.rounds):
            results = concurrent_gets(port, args.requests, args.timeout)
            kinds = [k for k, _ in results]
            print(json.dumps({"requests": args.requests, "timeout_s": args.timeout,
                              "ok": kinds.count("ok"), "timeout": kinds.count("timeout"),
                              "refused_or_reset": kinds.count("refused_or_reset"),
                              "other": kinds.count("other"),
                              "slowest_s": round(max(s for _, s in results), 2),
                              "load": os.getloadavg()[0]}))
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


if __name__ == "__main__":
    main()
