#!/bin/sh
# One-off set-up for the compose demo, run as root in the fedmix image by the
# "init" service. It plays the deployment's CA holder and each hospital's IT:
#   /pki                    the CA (ca.key never leaves this volume)
#   /init/SITE/etc          an agent's /etc/fedmix: agent.json, cert.pem, key.pem, ca.pem
#   /init/SITE/data         the agent's data (its /srv/fedmix, read-only for the agent)
#   /init/coordinator/etc   the coordinator's sites.json, cert.pem, key.pem, ca.pem
# Running it again changes nothing. (ROOT=DIR puts all of these under DIR, to
# try the script outside a container.)
set -eu

R=${ROOT:-}
SITES="harbour mercy university"     # three hospitals of fedmix's demo registry
AGENT_UID=10001                      # the image's fedmix user

if [ -f "$R/pki/demo-init.done" ]; then
    echo "demo-init: already set up (to start over: docker compose -f docker/compose.yaml down -v)"
    exit 0
fi
if [ -f "$R/pki/ca/ca.key" ]; then
    echo "demo-init: an earlier run stopped half-way; start over: docker compose -f docker/compose.yaml down -v" >&2
    exit 1
fi

# The deployment's CA and the coordinator's certificate.
fedmix certs init "$R/pki/ca"
fedmix certs issue --ca "$R/pki/ca" --name coordinator --out "$R/init/coordinator/etc"
cp "$R/pki/ca/ca.pem" "$R/init/coordinator/etc/ca.pem"

# The demo registry: one CSV per hospital (the demo's own in-process fit is discarded).
fedmix demo --keep "$R/tmp/registry" --in-process > /dev/null

sites_json=""
for site in $SITES; do
    etc="$R/init/$site/etc"
    data="$R/init/$site/data"
    # The agent's certificate is for its service name, which the coordinator dials.
    fedmix certs issue --ca "$R/pki/ca" --name "agent-$site" --out "$etc"
    cp "$R/pki/ca/ca.pem" "$etc/ca.pem"
    cp "$R/tmp/registry/$site.csv" "$data/registry.csv"
    cat > "$etc/agent.json" <<JSON
{"site": "$site",
 "listen": "0.0.0.0:7443",
 "tls": {"certificate": "cert.pem", "key": "key.pem", "ca": "ca.pem",
         "allowed_coordinators": ["coordinator"]},
 "datasets": {"registry": {"csv": "/srv/fedmix/registry.csv"}},
 "allowed_variables": ["site", "sbp_12wk", "baseline_sbp", "age", "sex", "treatment"],
 "audit_log": "/var/lib/fedmix/audit.db",
 "disclosure": {"min_rows": 10, "min_cell": 5}}
JSON
    chown -R "$AGENT_UID:$AGENT_UID" "$etc" "$data"
    chmod 0700 "$etc"
    chmod 0600 "$etc/key.pem"
    chmod 0644 "$etc/cert.pem" "$etc/ca.pem" "$etc/agent.json" "$data/registry.csv"
    entry="  {\"name\": \"$site\", \"address\": \"agent-$site:7443\"}"
    sites_json="${sites_json:+$sites_json,
}$entry"
done

cat > "$R/init/coordinator/etc/sites.json" <<JSON
{"tls": {"certificate": "cert.pem", "key": "key.pem", "ca": "ca.pem"},
 "sites": [
$sites_json
 ]}
JSON
chown -R "$AGENT_UID:$AGENT_UID" "$R/init/coordinator/etc"
chmod 0700 "$R/init/coordinator/etc"
chmod 0600 "$R/init/coordinator/etc/key.pem"
touch "$R/pki/demo-init.done"
echo "demo-init: CA in /pki; certificates for coordinator, agent-harbour, agent-mercy, agent-university; registry data written"
