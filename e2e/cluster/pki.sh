# PKI and kubeconfigs of the e2e cluster, made once per cluster directory (sourced by up.sh).
# shellcheck shell=bash

pki_cert() { # NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA
  local name="$1" subject="$2" san="${3:-}" ext="$DIR/pki/$1.ext"
  [[ -f $DIR/pki/$name.crt ]] && return 0
  openssl genrsa -out "$DIR/pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$DIR/pki/$name.key" -subj "$subject" -out "$DIR/pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$DIR/pki/$name.crt" 2>/dev/null
}

kubeconfig_for() { # NAME: DIR/NAME.kubeconfig with the client certificate pki/NAME.crt
  local name="$1"
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kip-e2e
  cluster:
    certificate-authority: $DIR/pki/ca.crt
    server: https://127.0.0.1:$API_PORT
users:
- name: $name
  user:
    client-certificate: $DIR/pki/$name.crt
    client-key: $DIR/pki/$name.key
contexts:
- name: $name@kip-e2e
  context: {cluster: kip-e2e, user: $name}
current-context: $name@kip-e2e
EOF
}

make_pki() {
  mkdir -p "$DIR/pki"
  if [[ ! -f $DIR/pki/ca.crt ]]; then
    log "making the cluster PKI"
    openssl genrsa -out "$DIR/pki/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$DIR/pki/ca.key" -subj "/CN=kip-e2e-ca" -days 3650 -sha256 \
      -out "$DIR/pki/ca.crt" 2>/dev/null
    # ServiceAccount token signing.
    openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  fi
  pki_cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_cert admin "/O=system:masters/CN=kip-admin"
  pki_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  pki_cert kube-controller-manager "/CN=system:kube-controller-manager"
  pki_cert kube-scheduler "/CN=system:kube-scheduler"
  pki_cert kwok "/O=system:masters/CN=kwok"
  pki_cert "node-$REAL_NODE" "/O=system:nodes/CN=system:node:$REAL_NODE"
  pki_cert kubelet-serving "/CN=$REAL_NODE" "IP:127.0.0.1,DNS:$REAL_NODE,DNS:localhost"
  for name in admin kube-controller-manager kube-scheduler kwok "node-$REAL_NODE"; do
    kubeconfig_for "$name"
  done
}
