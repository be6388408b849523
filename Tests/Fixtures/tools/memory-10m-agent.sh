#!/bin/bash
# Peak memory of one agent serving the rows of memory-10m-sqlite.py from
# SQLite, beside three CSV agents (BENCHMARKS.md):
#   DIR=/tmp/fedmix-mem BIN=.build/release memory-10m-agent.sh FORMULA [FAMILY]
# Prints the fit and the big agent's VmHWM (peak) and VmRSS after it;
# DIR/rss.log has its VmRSS every 0.5 s. WORK_LIMIT=1e11 raises the big
# agent's limits.max_work_per_request (default 1e10).
set -e
D=${DIR:-/tmp/fedmix-mem}; B=$(cd "${BIN:-.build/release}" && pwd)
cd $D
if [ ! -d ca ]; then
  $B/fedmix certs init ca --days 2 >/dev/null
  $B/fedmix certs issue --ca ca --name coordinator --out coord --days 2 >/dev/null
  for s in big small0 small1 small2; do $B/fedmix certs issue --ca ca --name $s --out $s --days 2 >/dev/null; done
fi
port=17600; sites=""; pids=""
for s in big small0 small1 small2; do
  port=$((port+1))
  limits=""; [ $s = big ] && [ -n "$WORK_LIMIT" ] && limits=", \"limits\": {\"max_work_per_request\": $WORK_LIMIT}"
  if [ $s = big ]; then ds="{\"sqlite\": \"$D/big.db\", \"table\": \"data\"}"; else ds="{\"csv\": \"$D/$s.csv\"}"; fi
  rm -f $D/$s-audit.db*
  cat > $D/$s.json <<J
{"site": "$s", "listen": "127.0.0.1:$port",
 "tls": {"certificate": "$D/$s/cert.pem", "key": "$D/$s/key.pem", "ca": "$D/ca/ca.pem", "allowed_coordinators": ["coordinator"]},
 "datasets": {"data": $ds}, "audit_log": "$D/$s-audit.db"$limits}
J
  $B/fedmix-agent serve --config $D/$s.json > $D/$s.log 2>&1 &
  eval "pid_$s=$!"
  sites="$sites{\"name\": \"$s\", \"address\": \"127.0.0.1:$port\", \"server_name\": \"$s\"},"
done
cat > $D/sites.json <<J
{"tls": {"certificate": "$D/coord/cert.pem", "key": "$D/coord/key.pem", "ca": "$D/ca/ca.pem"},
 "sites": [${sites%,}], "round_timeout": 1200}
J
sleep 2
grep VmRSS /proc/$pid_big/status
fam=""; [ -n "$2" ] && fam="--family $2"
( while kill -0 $pid_big 2>/dev/null; do echo "$(date +%s.%N | cut -c1-14) $(grep VmRSS /proc/$pid_big/status)"; sleep 0.5; done ) > $D/rss.log &
/usr/bin/time -f "coordinator: %e s wall, %M kB peak" $B/fedmix fit --sites $D/sites.json --dataset data --formula "$1" $fam --quiet > $D/fit.out 2>$D/fit.err || true
tail -25 $D/fit.out; cat $D/fit.err
echo "big agent: $(grep -E 'VmHWM|VmRSS' /proc/$pid_big/status | tr '\n' ' ')"
for s in big small0 small1 small2; do eval "kill \$pid_$s"; done
wait 2>/dev/null || true
