# A private Kubernetes control plane for the tests, the way controller-runtime's envtest runs one:
# etcd, kube-apiserver and kube-controller-manager from the directory KUBEBUILDER_ASSETS names
# (v1.28+; `setup-envtest use 1.28.x --bin-dir DIR` gives one, plus any release
# kube-controller-manager), with their own CA, service-account keys, ports and data directory,
# configured as kubeadm configures a cluster (Node,RBAC authorization, bootstrap-token auth,
# NodeRestriction, admission policies, cluster-info readable by anyone, the bootstrap group bound
# to node-bootstrapper, and kubeadm's auto-approval of node-client CSRs for kubeadm's own token
# group, which the broker's tokens no longer carry: the attacks it allowed are tested against it)
# and with infra/k8s/base applied (the workers' ServiceAccounts, RBAC and admission policies). Exports
# WORLDLAND_TEST_KUBECONFIG (an admin kubeconfig) and WORLDLAND_TEST_CA_HASH; stops what it
# started by PID.
# Sourced by scripts/test after scripts/services.sh (it uses log and port_open).
# shellcheck shell=bash

free_port() {
  local port=$1
  while port_open "$port"; do port=$((port + 1)); done
  echo "$port"
}

# The CA, the API server's serving certificate, the service-account key pair, an admin token.
control_plane_credentials() {
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=worldland-test-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$dir/apiserver.key" -out "$dir/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' \
    >"$dir/san.ext"
  openssl x509 -req -in "$dir/apiserver.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/san.ext" -out "$dir/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  ADMIN_TOKEN=$(openssl rand -hex 24)
  CM_TOKEN=$(openssl rand -hex 24)
  {
    printf '%s,admin,admin-uid,"system:masters"\n' "$ADMIN_TOKEN"
    printf '%s,system:kube-controller-manager,kcm-uid\n' "$CM_TOKEN"
  } >"$dir/tokens.csv"
}

# A kubeconfig for `server` as the bearer of `token`.
write_kubeconfig() {
  local file=$1 server=$2 token=$3 ca=$4
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: worldland-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: worldland-test
  user:
    token: $token
contexts:
- name: worldland-test
  context: {cluster: worldland-test, user: worldland-test}
current-context: worldland-test
EOF
}

wait_http() {
  local url=$1 what=$2 expect=$3 tries=${4:-150}
  shift 4
  for _ in $(seq "$tries"); do
    curl -fsk --max-time 2 "$@" "$url" 2>/dev/null | grep -q "$expect" && return 0
    sleep 0.2
  done
  log "$what did not answer $expect at $url"
  return 1
}

start_control_plane() {
  local bin=${KUBEBUILDER_ASSETS:-}
  if [ -z "$bin" ] || [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/etcd" ] || [ ! -x "$bin/kubectl" ]; then
    log "control plane: KUBEBUILDER_ASSETS does not name kube-apiserver, etcd and kubectl; the real-control-plane tests are skipped"
    return 0
  fi
  CONTROL_PLANE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/worldland-control-plane.XXXXXX")
  local dir=$CONTROL_PLANE_DIR
  control_plane_credentials "$dir"
  local etcd_port peer_port api_port
  etcd_port=$(free_port 23790)
  peer_port=$(free_port $((etcd_port + 1)))
  "$bin/etcd" --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  ETCD_PID=$!
  wait_http "http://127.0.0.1:$etcd_port/health" etcd '"health":"true"' 150 || return 1
  api_port=$(free_port 26443)
  "$bin/kube-apiserver" --bind-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
    --client-ca-file="$dir/ca.crt" --token-auth-file="$dir/tokens.csv" \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.96.0.0/12 \
    --endpoint-reconciler-type=none --authorization-mode=Node,RBAC --enable-bootstrap-token-auth \
    --enable-admission-plugins=NodeRestriction --feature-gates=ValidatingAdmissionPolicy=true \
    --runtime-config=admissionregistration.k8s.io/v1beta1=true >"$dir/apiserver.log" 2>&1 &
  APISERVER_PID=$!
  local server="https://127.0.0.1:$api_port"
  wait_http "$server/readyz" kube-apiserver '^ok' 300 -H "Authorization: Bearer $ADMIN_TOKEN" || return 1
  write_kubeconfig "$dir/admin.kubeconfig" "$server" "$ADMIN_TOKEN" "$dir/ca.crt"
  write_kubeconfig "$dir/controller-manager.kubeconfig" "$server" "$CM_TOKEN" "$dir/ca.crt"
  kubeadm_like_setup "$bin/kubectl" "$dir" "$server" || return 1
  apply_shipped_manifests "$bin/kubectl" "$dir" || return 1
  if [ -x "$bin/kube-controller-manager" ]; then
    "$bin/kube-controller-manager" --kubeconfig="$dir/controller-manager.kubeconfig" \
      --authentication-skip-lookup --authorization-always-allow-paths=/healthz \
      --controllers='*,bootstrapsigner,tokencleaner' --use-service-account-credentials \
      --service-account-private-key-file="$dir/sa.key" --root-ca-file="$dir/ca.crt" \
      --cluster-signing-cert-file="$dir/ca.crt" --cluster-signing-key-file="$dir/ca.key" \
      --feature-gates=ValidatingAdmissionPolicy=true --leader-elect=false --secure-port=0 >"$dir/controller-manager.log" 2>&1 &
    CONTROLLER_MANAGER_PID=$!
  else
    log "control plane: no kube-controller-manager in $bin; approved CSRs will not be signed"
  fi
  export WORLDLAND_TEST_KUBECONFIG="$dir/admin.kubeconfig"
  # The CA's hash as kubeadm's documentation computes it, for the join command's --discovery-token-ca-cert-hash.
  WORLDLAND_TEST_CA_HASH="sha256:$(openssl x509 -pubkey -noout -in "$dir/ca.crt" |
    openssl rsa -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //')"
  export WORLDLAND_TEST_CA_HASH
  log "control plane: kube-apiserver $("$bin/kube-apiserver" --version 2>/dev/null | awk '{print $2}') on $server (etcd :$etcd_port), data in $dir"
}

# What kubeadm init leaves behind: cluster-info in kube-public, readable anonymously, the
# bootstrap-token group allowed to post node CSRs, and kubeadm:node-autoapprove-bootstrap (the
# controller manager approves node-client CSRs from tokens in kubeadm's group).
kubeadm_like_setup() {
  local kubectl=$1 dir=$2 server=$3
  write_kubeconfig "$dir/cluster-info.kubeconfig" "$server" unused "$dir/ca.crt"
  sed -i '/^users:/,$d' "$dir/cluster-info.kubeconfig"
  printf 'users: []\ncontexts: []\n' >>"$dir/cluster-info.kubeconfig"
  local k=("$kubectl" --kubeconfig "$dir/admin.kubeconfig")
  "${k[@]}" -n kube-public create configmap cluster-info \
    --from-file=kubeconfig="$dir/cluster-info.kubeconfig" >/dev/null &&
    "${k[@]}" -n kube-public create role worldland-test:cluster-info-reader \
      --verb=get --resource=configmaps --resource-name=cluster-info >/dev/null &&
    "${k[@]}" -n kube-public create rolebinding worldland-test:cluster-info-reader \
      --role=worldland-test:cluster-info-reader --user=system:anonymous >/dev/null &&
    "${k[@]}" create clusterrolebinding worldland-test:node-bootstrapper \
      --clusterrole=system:node-bootstrapper --group=system:bootstrappers >/dev/null &&
    "${k[@]}" create clusterrolebinding kubeadm:node-autoapprove-bootstrap \
      --clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient \
      --group=system:bootstrappers:kubeadm:default-node-token >/dev/null
}

# The shipped manifests (infra/k8s/base: namespace, ServiceAccounts, RBAC, the admission policies,
# the Deployments, whose pods stay unscheduled: there is no scheduler), so the real-cluster tests
# check the RBAC and the policies the broker ships. 1.28 and 1.29 serve the policies only as
# admissionregistration.k8s.io/v1beta1 (the API server above enables it), with the same fields
# (infra/README.md, "Versions"). The API server loads policies asynchronously: this returns once
# each of them refuses a server-side dry run it must refuse.
apply_shipped_manifests() {
  local kubectl=$1 dir=$2
  local k=("$kubectl" --kubeconfig "$dir/admin.kubeconfig")
  "$kubectl" kustomize "$(dirname "${BASH_SOURCE[0]}")/../infra/k8s/base" >"$dir/worldland-base.yaml" || {
    log "control plane: kubectl kustomize infra/k8s/base failed"
    return 1
  }
  sed -i 's#^apiVersion: admissionregistration.k8s.io/v1$#apiVersion: admissionregistration.k8s.io/v1beta1#' \
    "$dir/worldland-base.yaml"
  if ! "${k[@]}" apply -f "$dir/worldland-base.yaml" >"$dir/worldland-apply.log" 2>&1; then
    log "control plane: applying infra/k8s/base failed:"
    cat "$dir/worldland-apply.log" >&2
    return 1
  fi
  local sa=system:serviceaccount:worldland probe=worldland-readiness-probe
  "${k[@]}" -n kube-system create secret generic "$probe" --from-literal=a=b >/dev/null &&
    printf 'apiVersion: v1\nkind: Node\nmetadata: {name: %s}\n' "$probe" | "${k[@]}" create -f - >/dev/null ||
    return 1
  # Each policy with a write it refuses: "policy|kubectl arguments".
  local probes=(
    "worldland-join-token-issuer|-n kube-system create secret generic $probe --from-literal=a=b --as=$sa:join-token-issuer"
    "worldland-token-deleter|-n kube-system delete secret $probe --wait=false --as=$sa:heartbeat-recorder"
    "worldland-node-marker|label node $probe example.com/probe=1 --as=$sa:staleness-sweeper"
    "worldland-node-keys|label node $probe worldland.io/probe=1 --as=system:node:$probe --as-group=system:nodes"
    "worldland-csr-approver|label node $probe example.com/probe=1 --as=$sa:csr-approver"
  )
  local p policy args out ok
  for p in "${probes[@]}"; do
    policy=${p%%|*} args=${p#*|} ok=
    for _ in $(seq 150); do
      # shellcheck disable=SC2086 # args is a list of words
      out=$("${k[@]}" --dry-run=server $args 2>&1) && true
      if grep -q "ValidatingAdmissionPolicy '$policy'" <<<"$out"; then ok=1 && break; fi
      sleep 0.2
    done
    if [ -z "$ok" ]; then
      log "control plane: $policy refused nothing within 30 s; last answer: $out"
      return 1
    fi
  done
  "${k[@]}" -n kube-system delete secret "$probe" >/dev/null && "${k[@]}" delete node "$probe" >/dev/null
}

stop_control_plane() {
  local pid
  for pid in "${CONTROLLER_MANAGER_PID:-}" "${APISERVER_PID:-}" "${ETCD_PID:-}"; do
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true # a killed process's status (143) is not this run's
    fi
  done
  if [ -n "${CONTROL_PLANE_DIR:-}" ]; then
    rm -rf "$CONTROL_PLANE_DIR"
    log "control plane: stopped"
  fi
}
