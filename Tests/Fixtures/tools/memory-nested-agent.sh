#!/bin/bash
# Peak memory of each of 3 real agents (fedmix-agent processes, CSV, mutual
# TLS on loopback) fitting y ~ x + (1 | site/patient/episode) with 20,000
# patients per site (1–3 episodes of 1–3 visits each; BENCHMARKS.md):
#   DIR=/tmp/fedmix-nested BIN=.build/release memory-nested-agent.sh
# Prints the fit and each agent's VmHWM (peak) after it.
set -e
D=${DIR:-/tmp/fedmix-nested}; B=$(cd "${BIN:-.build/release}" && pwd)
mkdir -p $D; cd $D
python3 - <<'P'
import random
random.seed(20260101)
for s in (1, 2, 3):
    us = random.gauss(0, 0.8)
    with open(f"site{s}.csv", "w") as f:
        f.write("patient,episode,x,y\n")
        for p in range(1, 20001):
            up = random.gauss(0, 1)
            for e in range(1, random.randint(1, 3) + 1):
                ue = random.gauss(0, 0.6)
                for _ in range(random.randint(1, 3)):
                    x = random.gauss(0, 1)
                    f.write(f"{p},{e},{x:.6f},{2 + 0.5 * x + us + up + ue + random.gauss(0, 0.7):.6f}\n")
P
if [ ! -d ca ]; then
  $B/fedmix certs init ca --days 2 >/dev/null
  $B/fedmix certs issue --ca ca --name coordinator --out coord --days 2 >/dev/null
  for s in site1 site2 site3; do $B/fedmix certs issue --ca ca --name $s --out $s --days 2 >/dev/null; done
fi
port=17700; sites=""; pids=""
for s in site1 site2 site3; do
  port=$((port+1))
  rm -f $D/$s-audit.db*
  cat > $D/$s.json <<J
{"site": "$s", "listen": "127.0.0.1:$port",
 "tls": {"certificate": "$D/$s/cert.pem", "key": "$D/$s/key.pem", "ca": "$D/ca/ca.pem", "allowed_coordinators": ["coordinator"]},
 "datasets": {"data": {"csv": "$D/$s.csv"}}, "audit_log": "$D/$s-audit.db"}
J
  $B/fedmix-agent serve --config $D/$s.json > $D/$s.log 2>&1 &
  pids="$pids $!"
  sites="$sites{\"name\": \"$s\", \"address\": \"127.0.0.1:$port\", \"server_name\": \"$s\"},"
done
cat > $D/sites.json <<J
{"tls": {"certificate": "$D/coord/cert.pem", "key": "$D/coord/key.pem", "ca": "$D/ca/ca.pem"},
 "sites": [${sites%,}], "round_timeout": 1200}
J
sleep 2
/usr/bin/time -f "coordinator: %e s wall, %M kB peak" $B/fedmix fit --sites $D/sites.json --dataset data \
  --formula "y ~ x + (1 | site/patient/episode)" --quiet > $D/fit.out 2>$D/fit.err || true
tail -25 $D/fit.out; cat $D/fit.err
for p in $pids; do echo "agent $p: $(grep -E 'VmHWM|VmRSS' /proc/$p/status | tr '\n' ' ')"; kill $p; done
wait 2>/dev/null || true
