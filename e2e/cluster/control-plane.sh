# The control plane of the e2e cluster, one function per component (sourced by up.sh and ctl.sh).
# shellcheck shell=bash

start_etcd() {
  start etcd "$BIN/etcd" --name kip-e2e --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kip-e2e=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 4294967296 --unsafe-no-fsync
  LOG_HINT=etcd wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_kube_apiserver() {
  cat >"$DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
# The control plane's own ServiceAccounts (controller-manager) are noise here.
- level: None
  userGroups: ["system:serviceaccounts:kube-system"]
# Every request of the other ServiceAccounts: the tests count what was refused (403) per identity.
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: Metadata
  resources:
  - {group: apps, resources: [daemonsets]}
  - {group: "", resources: [events, configmaps]}
  - {group: events.k8s.io, resources: [events]}
  - {group: coordination.k8s.io, resources: [leases]}
- level: None
EOF
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --endpoint-reconciler-type none \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --kubelet-client-certificate "$DIR/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$DIR/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$DIR/pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/logs/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --profiling=false
  LOG_HINT=kube-apiserver wait_for kube-apiserver 90 kubectl_admin get --raw /readyz
}

# No leader election for the controller-manager and the scheduler: a restart takes over at once.
start_kube_controller_manager() {
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 \
    --use-service-account-credentials \
    --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
    --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
    --leader-elect=false
}

start_kube_scheduler() {
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 \
    --leader-elect=false
}

# kwok makes nodes annotated kwok.x-k8s.io/node=fake Ready and their pods Running.
start_kwok() {
  start kwok "$BIN/kwok" \
    --kubeconfig "$DIR/kwok.kubeconfig" \
    --config "$BIN/kwok-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.2 --node-port 10350 --server-address 127.0.0.1:10351 \
    --cidr "${KWOK_POD_CIDR%.0/*}.1/${KWOK_POD_CIDR#*/}"
}
