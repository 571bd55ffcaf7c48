#!/usr/bin/env bash
# The Autobahn WebSocket conformance suite against kurir-wire: builds the echo server
# (wire/examples/echo.rs, on the same WsSocket read and write path as the gateway),
# starts it on a free loopback port, drives every case of sections 1-7, 9, 10, 12 and 13
# through kosoku (a native runner of the Autobahn TestSuite case files, from PyPI; it is
# installed into target/ when missing), and writes the summary to
# docs/autobahn/summary.txt (or $AUTOBAHN_SUMMARY).
#
# Exits non-zero unless every case of sections 1-7, 9 and 10 ends OK, NON-STRICT or
# INFORMATIONAL; sections 12-13 (permessage-deflate, not offered) may end UNIMPLEMENTED.
# The full HTML/JSON reports stay in target/autobahn/reports.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

TARGET="${CARGO_TARGET_DIR:-target}"
WORK="$TARGET/autobahn"
SUMMARY="${AUTOBAHN_SUMMARY:-docs/autobahn/summary.txt}"
KOSOKU_VERSION="${KOSOKU_VERSION:-0.1.0}"
mkdir -p "$WORK"

# kosoku: the one on PATH, else a private install under target/ (pip's --target also
# works where Debian marks the system Python as externally managed).
if command -v kosoku >/dev/null; then
  KOSOKU=(kosoku)
else
  if [ ! -d "$WORK/pylib/kosoku" ]; then
    log "installing kosoku $KOSOKU_VERSION with pip into $WORK/pylib"
    python3 -m pip install --quiet --disable-pip-version-check --target "$WORK/pylib" \
      "kosoku==$KOSOKU_VERSION"
  fi
  export PYTHONPATH="$WORK/pylib${PYTHONPATH:+:$PYTHONPATH}"
  KOSOKU=(python3 -c 'from kosoku._cli import main; main()')
fi

log "building the echo server"
cargo build --quiet -p kurir-wire --example echo
ECHO="$TARGET/debug/examples/echo"

"$ECHO" 127.0.0.1:0 >"$WORK/echo.log" 2>&1 &
ECHO_PID=$!
trap 'kill "$ECHO_PID" 2>/dev/null || true' EXIT
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^listening on //p' "$WORK/echo.log")"
  [ -n "$ADDR" ] && break
  kill -0 "$ECHO_PID" 2>/dev/null || { cat "$WORK/echo.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { log "the echo server did not start"; exit 1; }

log "running the Autobahn cases against $ADDR"
rm -rf "$WORK/reports"
START=$(date +%s)
# kosoku exits 1 when any case is not OK (UNIMPLEMENTED included): judged below instead.
timeout 600 "${KOSOKU[@]}" "$ADDR" -o "$WORK/reports" \
  -i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*' \
  -i '12.*' -i '13.*' >"$WORK/kosoku.log" 2>&1 || true
log "cases ran in $(($(date +%s) - START)) s"

mkdir -p "$(dirname "$SUMMARY")"
python3 - "$WORK/reports/index.json" "$SUMMARY" "$KOSOKU_VERSION" <<'EOF'
import json, sys
from collections import Counter, defaultdict

index, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    agents = json.load(open(index))
except (OSError, ValueError) as e:
    sys.exit(f"no kosoku report at {index}: {e}")
cases = next(iter(agents.values()))

REQUIRED = {"1", "2", "3", "4", "5", "6", "7", "9", "10"}
FINE = {"OK", "NON-STRICT", "INFORMATIONAL"}
OPTIONAL_FINE = FINE | {"UNIMPLEMENTED"}
EXPECTED = {"1": 16, "2": 11, "3": 7, "4": 10, "5": 20, "6": 145, "7": 37, "9": 54,
            "10": 1, "12": 90, "13": 126}

def key(case_id):
    return tuple(int(p) for p in case_id.split("."))

by_section = defaultdict(Counter)
notable, failed = [], []
for cid in sorted(cases, key=key):
    c = cases[cid]
    section = cid.split(".")[0]
    b, bc = c["behavior"], c["behaviorClose"]
    worst = b if b != "OK" else bc
    by_section[section][worst] += 1
    fine = FINE if section in REQUIRED else OPTIONAL_FINE
    if b not in fine or bc not in fine:
        failed.append(f"{cid}: behavior {b}, close {bc}")
    elif worst not in ("OK", "UNIMPLEMENTED"):
        notable.append(f"{cid}: {worst} (close code {c.get('remoteCloseCode')})")
missing = [s for s, n in EXPECTED.items() if sum(by_section[s].values()) != n]
for s in missing:
    failed.append(f"section {s}: {sum(by_section[s].values())} cases ran, {EXPECTED[s]} expected")

cols = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE"]
other = lambda c: sum(n for k, n in c.items() if k not in cols)
lines = [
    f"Autobahn TestSuite cases (kosoku {version}) against kurir-wire's echo server",
    "(wire/examples/echo.rs on WsSocket), written by scripts/autobahn.sh.",
    "",
    f"{'section':<8}{'cases':>6}" + "".join(f"{c:>15}" for c in cols) + f"{'other':>7}",
]
for s in sorted(by_section, key=int):
    c = by_section[s]
    lines.append(f"{s:<8}{sum(c.values()):>6}" + "".join(f"{c[k]:>15}" for k in cols) + f"{other(c):>7}")
lines += ["", "Cases not plainly OK (sections 12-13: permessage-deflate is not offered, so UNIMPLEMENTED):"]
lines += [f"  {n}" for n in notable] or ["  none"]
lines += ["", f"Result: {'FAIL' if failed else 'PASS'} (sections 1-7, 9, 10 all OK, NON-STRICT or INFORMATIONAL)"]
lines += [f"  {f}" for f in failed]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failed else 0)
EOF
