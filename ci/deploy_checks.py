#!/usr/bin/env python3
"""Helpers for ci/deploy-checks.sh: YAML plumbing and assertions on rendered manifests.

Subcommands (each exits 0 on success, 1 with messages on stderr otherwise):
  configmap-dir MANIFESTS OUTDIR      write each data key of the (only) ConfigMap to OUTDIR/KEY
  oc-process TEMPLATE OUT [P=V ...]   substitute an OpenShift Template's parameters (as `oc process`)
  drop-kinds IN OUT KIND...           copy a multi-document YAML without the given kinds
  restricted MANIFESTS                Pod Security "restricted" rules on every pod template
  assert-chart SCENARIO MANIFESTS     scenario-specific assertions on `helm template` output
  assert-openshift-webhook WEBHOOK APP NS  deploy/openshift/webhook.yaml's objects and app.yaml with
                                      WEBHOOK_ADDR (the service CA's certificate)
  toml-roundtrip MANIFESTS JSON       config.toml in the ConfigMap parses to the sets in JSON
  elf-interp FILE                     print the ELF program interpreter (empty if static)
  rbac-table JSON CHART SETS TEMPLATE FIXTURE   chart/OpenShift Roles grant exactly `rbac -o json`
  keep-kinds IN OUT KIND...           copy only the objects of the given kinds
  same-objects A B                    the same objects in both files, in any order
  set-namespace IN OUT NS             namespace for objects naming none (as `oc apply -n NS`)
  netpol-covers POLICIES RENDERED...  every rendered pod template is under a deny-all NetworkPolicy
  assert-controller-netpol MANIFESTS CIDR PORT...  the controller's optional NetworkPolicy
  doc-values OUTDIR MARKDOWN...       write each ```yaml block of the docs that is Helm values (not a
                                      manifest) to OUTDIR/<doc>-L<line>.yaml; print the paths
"""
import json
import os
import re
import struct
import sys

import yaml

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = None


class CheckError(Exception):
    pass


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for d in docs:
        if d.get("kind") == "List":
            out.extend(d.get("items") or [])
        else:
            out.append(d)
    return out


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    if len(found) != 1:
        raise CheckError(f"expected exactly one {kind}, found {len(found)}")
    return found[0]


def expect(cond, msg):
    if not cond:
        raise CheckError(msg)


# --- configmap-dir -----------------------------------------------------------

def config_map_of(docs):
    """The controller's ConfigMap: the only one, else the one its Deployment mounts (not the Grafana dashboard's)."""
    cms = by_kind(docs, "ConfigMap")
    if len(cms) > 1:
        mounted = {v["configMap"]["name"] for d in by_kind(docs, "Deployment")
                   for v in d["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v}
        cms = [c for c in cms if c["metadata"]["name"] in mounted]
    expect(len(cms) == 1, f"expected exactly one ConfigMap (the one the Deployment mounts), found {len(cms)}")
    return cms[0]


def cmd_configmap_dir(manifests, outdir):
    cm = config_map_of(load_docs(manifests))
    os.makedirs(outdir, exist_ok=True)
    for key, value in (cm.get("data") or {}).items():
        expect("/" not in key, f"bad ConfigMap key {key!r}")
        with open(os.path.join(outdir, key), "w") as f:
            f.write(value)
    print("\n".join(sorted((cm.get("data") or {}).keys())))


# --- oc-process --------------------------------------------------------------

PARAM_RE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
NONSTRING_RE = re.compile(r"^\$\{\{([A-Za-z0-9_]+)\}\}$")


def cmd_oc_process(template, out, *assignments):
    with open(template) as f:
        tpl = yaml.safe_load(f)
    expect(tpl.get("kind") == "Template", f"{template}: not a Template")
    expect(tpl.get("apiVersion") in ("template.openshift.io/v1", "v1"), f"{template}: bad apiVersion")
    values = {}
    declared = set()
    for p in tpl.get("parameters") or []:
        declared.add(p["name"])
        if "value" in p:
            values[p["name"]] = str(p["value"])
    for a in assignments:
        name, _, val = a.partition("=")
        expect(name in declared, f"{template}: unknown parameter {name}")
        values[name] = val
    for p in tpl.get("parameters") or []:
        if p.get("required") and not values.get(p["name"]):
            raise CheckError(f"{template}: required parameter {p['name']} has no value")
    used = set()

    def subst(node):
        if isinstance(node, dict):
            return {subst(k): subst(v) for k, v in node.items()}
        if isinstance(node, list):
            return [subst(v) for v in node]
        if isinstance(node, str):
            m = NONSTRING_RE.match(node)
            if m:
                expect(m.group(1) in declared, f"{template}: undeclared parameter {m.group(1)}")
                used.add(m.group(1))
                return yaml.safe_load(values.get(m.group(1), ""))

            def rep(m):
                expect(m.group(1) in declared, f"{template}: undeclared parameter {m.group(1)}")
                used.add(m.group(1))
                return values.get(m.group(1), "")
            return PARAM_RE.sub(rep, node)
        return node

    objects = subst(tpl.get("objects") or [])
    unused = declared - used
    expect(not unused, f"{template}: parameters never used: {sorted(unused)}")
    with open(out, "w") as f:
        yaml.safe_dump_all(objects, f, sort_keys=False)
    print(f"{len(objects)} objects")


# --- drop-kinds --------------------------------------------------------------

def cmd_drop_kinds(src, dst, *kinds):
    docs = load_docs(src)
    kept = [d for d in docs if d.get("kind") not in kinds]
    with open(dst, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    dropped = len(docs) - len(kept)
    if dropped:
        print(f"left out {dropped} object(s) of kind {', '.join(kinds)} (no schema offline)")


# --- Pod Security "restricted" -----------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


def pod_spec_of(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def restricted_violations(obj):
    spec = pod_spec_of(obj)
    if spec is None:
        return None
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    v = []
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            v.append(f"{name}: {f}")
    for vol in spec.get("volumes") or []:
        types = set(vol) - {"name"}
        if not types <= ALLOWED_VOLUMES:
            v.append(f"{name}: volume {vol.get('name')} of type {sorted(types)}")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsUser") == 0:
        v.append(f"{name}: pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append(f"{name}: pod seccompProfile {pod_seccomp}")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    expect(containers, f"{name}: no containers")
    for c in containers:
        cn = f"{name} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append(f"{cn}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{cn}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{cn}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            v.append(f"{cn}: capabilities.add {caps.get('add')}")
        nonroot = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if nonroot is not True:
            v.append(f"{cn}: runAsNonRoot not true (pod or container)")
        if sc.get("runAsUser") == 0:
            v.append(f"{cn}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{cn}: seccompProfile not RuntimeDefault/Localhost")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                v.append(f"{cn}: hostPort")
    return v


def cmd_restricted(manifests):
    docs = load_docs(manifests)
    problems, checked = [], 0
    for d in docs:
        r = restricted_violations(d)
        if r is None:
            continue
        checked += 1
        problems.extend(r)
    expect(checked, f"{manifests}: no pod templates to check")
    if problems:
        raise CheckError("\n".join(problems))
    print(f"{checked} pod template(s) meet the restricted profile")


# --- assert-chart --------------------------------------------------------------

UPSTREAM_KEYS = {"IMAGES", "DAEMONSET_NAME", "CACHING_INTERVAL_HOURS", "NAMESPACE",
                 "CACHING_MEMORY_REQUEST", "CACHING_MEMORY_LIMIT", "CACHING_CPU_REQUEST",
                 "CACHING_CPU_LIMIT", "NODE_SELECTOR"}

# The table of src/rbac.rs; rbac-table checks it against `kubernetes-image-puller rbac -o json` too.
EXPECTED_ROLE = {
    ("apps", "daemonsets"): {"get", "list", "watch", "create", "delete", "patch", "update"},
    ("apps", "deployments"): {"get"},
    # list: the health check; create, delete: the digest refresh's per-node refresh pods.
    ("", "pods"): {"list", "create", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "events"): {"list"},
    ("coordination.k8s.io", "leases"): {"get", "create", "patch"},
    ("", "resourcequotas"): {"list"},
    ("", "limitranges"): {"list"},
    ("", "configmaps"): {"get", "list", "watch"},
    # The admission webhook's TLS Secret (get, update by name; create cannot be restricted by name).
    ("", "secrets"): {"get", "update", "create"},
}
# The warm gate (chart ClusterRole, with warmGate.enabled and sets): nodes list (also rbac.nodeAccess's) and
# patch (the startup taint), nodes/status patch (the ImagesCached condition).
WARM_GATE_CLUSTER_RULES = {("", "nodes"): {"list", "patch"}, ("", "nodes/status"): {"patch"}}
# The admission webhook's own ValidatingWebhookConfiguration (chart ClusterRole, with webhook.enabled).
WEBHOOK_CLUSTER_RULES = {("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"get", "patch", "create"}}


def rules_map(rules):
    got = {}
    for r in rules:
        for field in ("apiGroups", "resources", "verbs"):
            expect("*" not in (r.get(field) or []), f"wildcard in {field}: {r}")
        for g in r["apiGroups"]:
            for res in r["resources"]:
                got.setdefault((g, res), set()).update(r["verbs"])
    return got


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def check_deployment(docs, ns, name, image, leader, replicas):
    dep = one(docs, "Deployment")
    expect(dep["metadata"]["name"] == name, f"Deployment name {dep['metadata']['name']} != {name}")
    spec = dep["spec"]
    expect(spec.get("replicas") == replicas, f"replicas {spec.get('replicas')} != {replicas}")
    expect(spec["strategy"]["type"] == "Recreate", "strategy is not Recreate")
    tpl = spec["template"]
    ann = (tpl["metadata"].get("annotations") or {})
    expect(not any(k.startswith("checksum/") for k in ann),
           "pod template has a checksum annotation: ConfigMap edits must not restart the pod")
    pod = tpl["spec"]
    c = pod["containers"][0]
    expect(c["image"] == image, f"image {c['image']} != {image}")
    env = env_of(c)
    expect(env["CONFIG_FILE"]["value"] == "/etc/kubernetes-image-puller", "CONFIG_FILE")
    expect(env["LEADER_ELECT"]["value"] == leader, f"LEADER_ELECT {env['LEADER_ELECT']} != {leader}")
    expect(env["DEPLOYMENT_NAME"]["value"] == name, "DEPLOYMENT_NAME")
    expect(env["KIP_IMAGE"]["value"] == image, "KIP_IMAGE is not the puller's own image")
    expect(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "POD_NAME")
    expect(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "POD_NAMESPACE")
    expect("envFrom" not in c, "envFrom: the ConfigMap is read as a mounted directory")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    m = mounts.get("/etc/kubernetes-image-puller")
    expect(m and "subPath" not in m, "ConfigMap not mounted as a directory at /etc/kubernetes-image-puller")
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    expect("configMap" in vols[m["name"]], "config volume is not a ConfigMap")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    expect(ports.get("http") == 8080, f"port http/8080 missing: {ports}")
    expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness /healthz")
    expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness /readyz")
    sc = c["securityContext"]
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    expect(c.get("resources", {}).get("requests"), "no resource requests")
    return dep


def check_common(docs, ns, name, configmap="k8s-image-puller", sa="k8s-image-puller", want_role=None):
    want_role = EXPECTED_ROLE if want_role is None else want_role
    role = one(docs, "Role")
    got = rules_map(role["rules"])
    expect(got == want_role, f"Role rules differ from the contract:\n got {got}\n want {want_role}")
    rb = one(docs, "RoleBinding")
    expect(rb["roleRef"]["name"] == role["metadata"]["name"], "RoleBinding does not bind the Role")
    expect(rb["subjects"][0]["name"] == sa, "RoleBinding subject")
    expect(one(docs, "ServiceAccount")["metadata"]["name"] == sa, "ServiceAccount name")
    svc = one(docs, "Service")
    expect(svc["spec"]["ports"][0]["name"] == "metrics", "Service port name")
    dep = one(docs, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    expect(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
           "Service selector does not select the controller pods")
    cm = one(docs, "ConfigMap")
    expect(cm["metadata"]["name"] == configmap, "ConfigMap name")
    # The config is also read through the API: one ConfigMap, granted by name only.
    cm_rules = [r for r in role["rules"] if "configmaps" in r["resources"]]
    expect([r.get("resourceNames") for r in cm_rules] == [[configmap]],
           f"configmaps must be granted on {configmap} only (resourceNames): {cm_rules}")
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    expect(env.get("CONFIG_MAP_NAME", {}).get("value") == configmap, "CONFIG_MAP_NAME is not the ConfigMap's name")
    for d in docs:
        md = d["metadata"]
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            expect(md.get("namespace", ns) == ns, f"{d['kind']}/{md['name']} not in {ns}")
    return cm


# The controller's own ValidatingWebhookConfiguration entry (src/webhook.rs `configuration`, checked against
# this fixture by a unit test) for the Service kubernetes-image-puller-metrics in k8s-image-puller.
WEBHOOK_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "webhook",
                               "validating-webhook.json")
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "Certificate", "Issuer")


def check_webhook_configuration(vwc, service, ns, annotation):
    """A ValidatingWebhookConfiguration rendered outside the controller (chart with cert-manager, OpenShift
    template): its one webhook is the controller's own (the fixture) for `service` in `ns`, and `annotation`
    (key, value) asks cert-manager or the service CA to inject the caBundle."""
    with open(WEBHOOK_FIXTURE) as f:
        want = json.load(f)
    want["clientConfig"]["service"]["name"] = service
    want["clientConfig"]["service"]["namespace"] = ns
    want["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = ns
    hooks = vwc.get("webhooks") or []
    expect(hooks == [want], f"ValidatingWebhookConfiguration webhooks differ from the controller's:\n got {hooks}\n want {[want]}")
    key, value = annotation
    got = (vwc["metadata"].get("annotations") or {}).get(key)
    expect(got == value, f"annotation {key}: {got!r} != {value!r}")


def check_webhook_self_managed(docs):
    """webhook.enabled alone: the controller makes its certificates and configuration; the chart renders
    neither, and tells the controller the Service, Secret and configuration names."""
    for kind in WEBHOOK_KINDS:
        expect(not by_kind(docs, kind), f"{kind} rendered without webhook.certManager.enabled")
    env = env_of(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    for name in ("WEBHOOK_ADDR", "WEBHOOK_SERVICE", "WEBHOOK_SECRET", "WEBHOOK_CONFIGURATION"):
        expect(name in env, f"{name} not set")
    expect("WEBHOOK_CERT_DIR" not in env, "WEBHOOK_CERT_DIR set without webhook.certManager.enabled")


def check_webhook_cert_manager(docs, ns, issuer):
    """webhook.certManager.enabled: Issuer (self-signed, unless `issuer` names one of the user's), Certificate
    into the mounted Secret, the configuration with cert-manager's inject-ca-from; the controller gets
    WEBHOOK_CERT_DIR and no webhook RBAC (no Secret rows, no ClusterRole)."""
    cert = one(docs, "Certificate")
    cert_name = cert["metadata"]["name"]
    svc = one(docs, "Service")
    expect([p for p in svc["spec"]["ports"] if p["name"] == "webhook"] ==
           [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}], "Service port webhook")
    service = svc["metadata"]["name"]
    expect(cert["spec"]["dnsNames"] == [f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"],
           f"Certificate dnsNames {cert['spec']['dnsNames']}")
    if issuer is None:
        iss = one(docs, "Issuer")
        expect(iss["spec"] == {"selfSigned": {}}, "Issuer is not self-signed")
        expect(cert["spec"]["issuerRef"] == {"name": iss["metadata"]["name"], "kind": "Issuer",
                                             "group": "cert-manager.io"}, "Certificate issuerRef")
    else:
        expect(not by_kind(docs, "Issuer"), "Issuer rendered although issuerRef names one")
        expect(cert["spec"]["issuerRef"] == issuer, f"Certificate issuerRef {cert['spec']['issuerRef']}")
    check_webhook_configuration(one(docs, "ValidatingWebhookConfiguration"), service, ns,
                                ("cert-manager.io/inject-ca-from", f"{ns}/{cert_name}"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = env_of(c)
    expect(env.get("WEBHOOK_ADDR", {}).get("value") == "0.0.0.0:8443", "WEBHOOK_ADDR")
    for name in ("WEBHOOK_SERVICE", "WEBHOOK_SECRET", "WEBHOOK_CONFIGURATION"):
        expect(name not in env, f"{name} set: the controller would manage what cert-manager does")
    cert_dir = env.get("WEBHOOK_CERT_DIR", {}).get("value")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    expect(cert_dir in mounts and mounts[cert_dir].get("readOnly") is True, f"WEBHOOK_CERT_DIR {cert_dir} not mounted read-only")
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    secret = vols[mounts[cert_dir]["name"]].get("secret") or {}
    expect(secret.get("secretName") == cert["spec"]["secretName"], "the mounted Secret is not the Certificate's")
    expect(secret.get("optional") is True, "the Secret volume must be optional (the controller starts before issuance)")
    expect(not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding"),
           "ClusterRole rendered: with cert-manager the controller needs no validatingwebhookconfigurations rows")


def cmd_assert_chart(scenario, manifests):
    docs = load_docs(manifests)
    ns = "k8s-image-puller"
    # The chart and app.yaml require the image (this project's own build): deploy-checks.sh names this one;
    # the tag is the chart's appVersion, except for upstream values, which keep their own tag.
    repo = os.environ.get("KIP_CI_IMAGE_REPOSITORY", "registry.example.com/kubernetes-image-puller")
    image = f"{repo}:next" if scenario == "upstream" else f"{repo}:0.1.0"
    if scenario == "default":
        cm = check_common(docs, ns, "kubernetes-image-puller")
        data = cm["data"]
        expect(UPSTREAM_KEYS <= set(data), f"missing upstream keys: {UPSTREAM_KEYS - set(data)}")
        expect("config.toml" not in data, "config.toml without sets")
        expect(data["DAEMONSET_NAME"] == "kubernetes-image-puller", "DAEMONSET_NAME")
        expect(data["NAMESPACE"] == ns, "NAMESPACE is not the release namespace")
        expect(data["CACHING_INTERVAL_HOURS"] == "1", "CACHING_INTERVAL_HOURS")
        expect(data["CACHING_MEMORY_REQUEST"] == "10Mi" and data["CACHING_MEMORY_LIMIT"] == "20Mi", "memory")
        expect(data["CACHING_CPU_REQUEST"] == ".05" and data["CACHING_CPU_LIMIT"] == ".2", "cpu")
        expect("che-theia=quay.io/eclipse/che-theia:next" in data["IMAGES"], "IMAGES")
        check_deployment(docs, ns, "kubernetes-image-puller", image, "false", 1)
        cr = one(docs, "ClusterRole")
        expect(rules_map(cr["rules"]) == WEBHOOK_CLUSTER_RULES,
               "default ClusterRole: the webhook's validatingwebhookconfigurations only")
        expect(not by_kind(docs, "ServiceMonitor"), "ServiceMonitor rendered by default")
        check_webhook_self_managed(docs)
    elif scenario in ("certmanager", "certmanager-issuer"):
        role = {k: v for k, v in EXPECTED_ROLE.items() if k != ("", "secrets")}
        check_common(docs, ns, "kubernetes-image-puller", want_role=role)
        check_deployment(docs, ns, "kubernetes-image-puller", image, "false", 1)
        issuer = {"name": "my-ca", "kind": "ClusterIssuer"} if scenario == "certmanager-issuer" else None
        check_webhook_cert_manager(docs, ns, issuer)
    elif scenario == "upstream":
        cm = check_common(docs, ns, "kubernetes-image-puller")
        data = cm["data"]
        expect(UPSTREAM_KEYS <= set(data), f"missing upstream keys: {UPSTREAM_KEYS - set(data)}")
        expect("config.toml" not in data, "config.toml without sets")
        expect(data["CACHING_MEMORY_LIMIT"] == "30Mi", "misspelt configMap.cachingMemeryLimit not honoured")
        expect(data["CACHING_INTERVAL_HOURS"] == "2", "CACHING_INTERVAL_HOURS")
        expect(json.loads(data["NODE_SELECTOR"]) == {"kubernetes.io/os": "linux"}, "NODE_SELECTOR")
        expect(data["IMAGE_PULL_SECRETS"] == "regcred;othercred", "IMAGE_PULL_SECRETS")
        expect(json.loads(data["TOLERATIONS"])[0]["key"] == "dedicated", "TOLERATIONS")
        dep = check_deployment(docs, ns, "kubernetes-image-puller", image, "false", 1)
        pod = dep["spec"]["template"]["spec"]
        expect("priorityClassName" not in pod, "upstream's priorityClassName: {} must mean none")
        expect(pod["tolerations"][0]["key"] == "CriticalAddonsOnly", "Deployment tolerations")
        expect(pod["nodeSelector"] == {"kubernetes.io/os": "linux"}, "Deployment nodeSelector")
        expect(pod["containers"][0]["resources"]["limits"]["memory"] == "128Mi", "Deployment resources")
    elif scenario == "sets":
        cm = check_common(docs, ns, "kubernetes-image-puller")
        data = cm["data"]
        expect(set(data) == {"config.toml"}, f"with sets the ConfigMap holds only config.toml, got {set(data)}")
        expect(tomllib, "python >= 3.11 needed for tomllib")
        cfg = tomllib.loads(data["config.toml"])
        expect([s["name"] for s in cfg["sets"]] == ["general", "gpu", "pinned"], "set names")
        expect(cfg["namespace"] == ns and cfg["caching_interval_hours"] == 6, "namespace/interval")
        expect(cfg["kip_image"] == image and cfg["deployment_name"] == "kubernetes-image-puller", "kip_image")
        gpu = cfg["sets"][1]
        expect(gpu["tolerations"][1]["tolerationSeconds"] == 300, "tolerationSeconds must stay an integer")
        expect(gpu["memory_limit"] == "30Mi", "per-set memory_limit")
        expect(cfg["defaults"]["cpu_limit"] == "0.2", "numeric quantity written as string")
        check_deployment(docs, ns, "kubernetes-image-puller", image, "true", 2)
        expect(cfg["warm_gate"] == {"taint": "kubernetes-image-puller/cold", "timeout": "20m"}, "warm_gate")
        cr = one(docs, "ClusterRole")
        expect(rules_map(cr["rules"]) == {**WARM_GATE_CLUSTER_RULES, **WEBHOOK_CLUSTER_RULES},
               "ClusterRole: the warm gate's nodes and nodes/status and the webhook's configurations only")
        crb = one(docs, "ClusterRoleBinding")
        expect(crb["subjects"][0]["namespace"] == ns, "ClusterRoleBinding subject namespace")
        sm = one(docs, "ServiceMonitor")
        expect(sm["spec"]["endpoints"][0]["port"] == "metrics", "ServiceMonitor port")
    elif scenario == "openshift":
        cm = check_common(docs, ns, "kubernetes-image-puller", sa="k8s-image-puller")
        data = cm["data"]
        expect(UPSTREAM_KEYS <= set(data), f"missing upstream keys: {UPSTREAM_KEYS - set(data)}")
        expect(cm["metadata"]["labels"].get("kubernetes-image-puller.io/config") == "true",
               "the ConfigMap lacks the label the webhook's objectSelector matches")
        dep = check_deployment(docs, ns, "kubernetes-image-puller", image, "false", 1)
        env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
        expect(env["WEBHOOK_ADDR"]["value"] == "", "the webhook must be off by default (WEBHOOK_ADDR empty)")
    else:
        raise CheckError(f"unknown scenario {scenario}")
    print(f"{scenario}: all assertions hold")


def cmd_assert_openshift_webhook(webhook_objects, app_objects, ns):
    """deploy/openshift/webhook.yaml processed for NS, and app.yaml processed with WEBHOOK_ADDR: a Service
    selecting the controller pods, annotated for the service CA's serving certificate, on the port app.yaml
    serves; the controller's own webhook entry with inject-cabundle; no RBAC needed; app.yaml serves the
    Secret the service CA issues (WEBHOOK_CERT_DIR on its optional mount)."""
    docs = load_docs(webhook_objects)
    expect(sorted(d["kind"] for d in docs) == ["Service", "ValidatingWebhookConfiguration"],
           f"webhook.yaml objects: {[d['kind'] for d in docs]} (no RBAC is needed: the controller makes no call)")
    svc = one(docs, "Service")
    expect(svc["metadata"].get("namespace") == ns, "the Service is not in NAMESPACE")
    secret = (svc["metadata"].get("annotations") or {}).get("service.beta.openshift.io/serving-cert-secret-name")
    expect(secret, "the Service lacks service.beta.openshift.io/serving-cert-secret-name")
    check_webhook_configuration(one(docs, "ValidatingWebhookConfiguration"), svc["metadata"]["name"], ns,
                                ("service.beta.openshift.io/inject-cabundle", "true"))
    app = load_docs(app_objects)
    dep = one(app, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    expect(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
           "the webhook Service does not select the controller pods")
    c = pod["containers"][0]
    env = env_of(c)
    addr = env["WEBHOOK_ADDR"]["value"]
    expect(addr, "app.yaml with WEBHOOK_ADDR: the webhook is still off")
    port = svc["spec"]["ports"][0]
    expect(port["port"] == 443 and port["targetPort"] == int(addr.rsplit(":", 1)[1]),
           f"Service port {port} does not reach WEBHOOK_ADDR {addr}")
    for name in ("WEBHOOK_SERVICE", "WEBHOOK_URL", "WEBHOOK_SECRET", "WEBHOOK_CONFIGURATION"):
        expect(name not in env, f"{name} set: the controller would manage what the service CA does")
    cert_dir = env["WEBHOOK_CERT_DIR"]["value"]
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    expect(cert_dir in mounts and mounts[cert_dir].get("readOnly") is True, f"{cert_dir} not mounted read-only")
    vol = {v["name"]: v for v in pod["volumes"]}[mounts[cert_dir]["name"]].get("secret") or {}
    expect(vol.get("secretName") == secret, f"app.yaml mounts {vol.get('secretName')}, the service CA issues {secret}")
    expect(vol.get("optional") is True, "the Secret volume must be optional (the webhook is optional)")
    print(f"webhook.yaml: Service {svc['metadata']['name']} -> {addr}, Secret {secret}, the controller's webhook")


def cmd_same_objects(a, b):
    """The same objects in both files, in any order (two Helm versions sort some kinds differently)."""
    def objects(path):
        return sorted(load_docs(path), key=lambda d: (d.get("kind", ""), d["metadata"].get("name", ""),
                                                      json.dumps(d, sort_keys=True)))
    got_a, got_b = objects(a), objects(b)
    expect(len(got_a) == len(got_b), f"{a}: {len(got_a)} objects, {b}: {len(got_b)}")
    for x, y in zip(got_a, got_b):
        expect(x == y, f"{x['kind']}/{x['metadata'].get('name')} differs from {y['kind']}/{y['metadata'].get('name')}")
    print(f"{len(got_a)} objects, the same in both")


def cmd_toml_roundtrip(manifests, sets_json):
    cm = one(load_docs(manifests), "ConfigMap")
    cfg = tomllib.loads(cm["data"]["config.toml"])
    want = json.loads(sets_json)
    for got_set, want_set in zip(cfg["sets"], want):
        expect(got_set["name"] == want_set["name"], "name")
        expect(got_set["images"] == want_set["images"], f"images {got_set['images']!r}")
        if "annotations" in want_set:
            expect(got_set["annotations"] == want_set["annotations"],
                   f"annotations {got_set['annotations']!r} != {want_set['annotations']!r}")
        if "nodeSelector" in want_set:
            expect(got_set["node_selector"] == want_set["nodeSelector"], "node_selector")
    expect(len(cfg["sets"]) == len(want), "number of sets")
    print("config.toml strings round-trip")


# --- rbac-table -----------------------------------------------------------------

def cmd_rbac_table(table_json, chart_default, chart_sets, openshift_template, fixture):
    """The permission table printed by the binary (`rbac -o json`) is what the chart's Role, its optional
    nodes ClusterRole and the OpenShift template's Role grant, verb for verb; and the golden fixture the
    fake-API tests load (tests/fixtures/rbac/chart-role.yaml) is the Role the chart renders."""
    with open(table_json) as f:
        table = json.load(f)
    want_role = rules_map(table["role"]["rules"])
    want_cluster = rules_map(table["clusterRole"]["rules"])
    problems = []

    def compare(what, got, want):
        if got != want:
            extra = {k: sorted(v - want.get(k, set())) for k, v in got.items() if v - want.get(k, set())}
            missing = {k: sorted(v - got.get(k, set())) for k, v in want.items() if v - got.get(k, set())}
            problems.append(f"{what} differs from the table: grants beyond it {extra}, lacks {missing}")

    chart_role = one(load_docs(chart_default), "Role")
    compare("chart Role", rules_map(chart_role["rules"]), want_role)
    compare("chart nodes ClusterRole", rules_map(one(load_docs(chart_sets), "ClusterRole")["rules"]), want_cluster)
    template = load_docs(openshift_template)[0]
    os_roles = [o for o in template["objects"] if o.get("kind") == "Role"]
    expect(len(os_roles) == 1, f"{openshift_template}: expected one Role, found {len(os_roles)}")
    compare("OpenShift template Role", rules_map(os_roles[0]["rules"]), want_role)
    golden = one(load_docs(fixture), "Role")
    if golden["rules"] != chart_role["rules"]:
        problems.append(f"{fixture} is stale: it differs from the chart's rendered Role; regenerate it")
    required = {(p["group"], p["resource"]) for p in table["permissions"] if p["required"]}
    expect(required == {("apps", "daemonsets"), ("apps", "deployments")}, f"required rows changed: {required}")
    expect(not problems, "\n".join(problems))
    print(f"chart Role, nodes ClusterRole, OpenShift Role and {fixture} grant exactly the table")


# --- ELF -----------------------------------------------------------------------

def cmd_elf_interp(path):
    with open(path, "rb") as f:
        data = f.read()
    expect(data[:4] == b"\x7fELF", f"{path}: not an ELF file")
    expect(data[4] == 2 and data[5] == 1, f"{path}: not 64-bit little-endian ELF")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type = struct.unpack_from("<I", data, off)[0]
        if p_type == 3:  # PT_INTERP
            p_offset = struct.unpack_from("<Q", data, off + 8)[0]
            p_filesz = struct.unpack_from("<Q", data, off + 32)[0]
            print(data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode())
            return
    print("")


# --- NetworkPolicies and checkov input ------------------------------------------

def cmd_keep_kinds(src, dst, *kinds):
    """Copy only the objects of the given kinds (e.g. the chart's NetworkPolicy, to scan with render output)."""
    kept = [d for d in load_docs(src) if d.get("kind") in kinds]
    expect(kept, f"{src}: no object of kind {', '.join(kinds)}")
    with open(dst, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    print(f"{len(kept)} object(s) of kind {', '.join(kinds)}")


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace", "PriorityClass"}


def cmd_set_namespace(src, dst, ns):
    """Put namespaced objects that name none into NS, as `oc apply -n NS` (or the current project) does."""
    docs = load_docs(src)
    for d in docs:
        if d.get("kind") not in CLUSTER_SCOPED:
            d.setdefault("metadata", {}).setdefault("namespace", ns)
    with open(dst, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    print(f"{len(docs)} object(s) in namespace {ns}")


def selects(policy, labels):
    sel = policy["spec"].get("podSelector") or {}
    expect(not sel.get("matchExpressions"), f"NetworkPolicy/{policy['metadata']['name']}: matchExpressions unsupported here")
    return all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items())


def cmd_netpol_covers(policies, *rendered):
    """Every pod template in RENDERED is selected by a deny-all NetworkPolicy (Ingress and Egress, no rule)
    of POLICIES: the policy matches the labels render really puts on the cache pods."""
    deny_all = [p for p in by_kind(load_docs(policies), "NetworkPolicy")
                if set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    expect(deny_all, f"{policies}: no deny-all (Ingress and Egress, no rules) NetworkPolicy")
    checked = 0
    for f in rendered:
        for d in load_docs(f):
            if pod_spec_of(d) is None:
                continue
            labels = d["spec"]["template"]["metadata"]["labels"]
            expect(any(selects(p, labels) for p in deny_all),
                   f"{f}: {d['kind']}/{d['metadata']['name']} pods {labels} not selected by a deny-all policy")
            checked += 1
    expect(checked, "no pod templates in the rendered files")
    print(f"{checked} cache pod template(s) under {', '.join(p['metadata']['name'] for p in deny_all)}")


def cmd_assert_controller_netpol(manifests, cidr, *api_ports):
    """The controller's NetworkPolicy: selects the controller pods; ingress to port http only; egress to the
    API server (CIDR, ports) and DNS (53 UDP and TCP) only."""
    docs = load_docs(manifests)
    dep = one(docs, "Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    mine = [p for p in by_kind(docs, "NetworkPolicy") if selects(p, labels)]
    expect(len(mine) == 1, f"expected one NetworkPolicy selecting the controller pods, found {len(mine)}")
    spec = mine[0]["spec"]
    expect(set(spec["policyTypes"]) == {"Ingress", "Egress"}, "policyTypes")
    ingress_ports = [(p["port"], p.get("protocol")) for r in spec["ingress"] for p in r["ports"]]
    # http (probes, metrics) and, with webhook.enabled (the default), the admission webhook.
    expect(ingress_ports in ([("http", "TCP")], [("http", "TCP"), ("webhook", "TCP")]), f"ingress ports {ingress_ports}")
    names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
    expect("http" in names, "the controller has no port named http")
    api, dns = spec["egress"]
    got = sorted((p["port"], p["protocol"]) for p in api["ports"])
    expect(got == sorted((int(x), "TCP") for x in api_ports), f"API server ports {got}")
    expect([t["ipBlock"]["cidr"] for t in api["to"]] == [cidr], f"API server peers {api.get('to')}")
    expect(sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")], "DNS ports")
    expect("to" not in dns, "DNS egress should reach any address")
    # The cache pods must not be selected by the controller's policy (it would open egress for them).
    expect(not selects(mine[0], {"app.kubernetes.io/name": "kip-cache",
                                 "app.kubernetes.io/managed-by": "kubernetes-image-puller"}),
           "the controller's policy also selects cache pods")
    print(f"NetworkPolicy/{mine[0]['metadata']['name']}: ingress http, egress {cidr} {got} and DNS")
# --- doc-values ----------------------------------------------------------------

def cmd_doc_values(outdir, *markdown):
    """The docs' Helm values snippets, so that each is rendered with `helm template` and its config checked."""
    os.makedirs(outdir, exist_ok=True)
    written = []
    for doc in markdown:
        with open(doc) as f:
            lines = f.read().split("\n")
        start = None
        for n, line in enumerate(lines, 1):
            if start is None and line.strip() == "```yaml":
                start, block = n, []
            elif start is not None and line.strip() == "```":
                try:
                    values = yaml.safe_load("\n".join(block))
                except yaml.YAMLError as e:
                    raise CheckError(f"{doc}:{start}: YAML block does not parse: {e}")
                # Manifests (apiVersion/kind) are not values for the chart.
                if isinstance(values, dict) and "kind" not in values and "apiVersion" not in values:
                    path = os.path.join(outdir, f"{os.path.basename(doc)}-L{start}.yaml")
                    with open(path, "w") as f:
                        f.write("\n".join(block) + "\n")
                    written.append(path)
                start = None
            elif start is not None:
                block.append(line)
    expect(written, f"no Helm values snippet in {' '.join(markdown)}")
    print("\n".join(written))


COMMANDS = {
    "configmap-dir": cmd_configmap_dir,
    "oc-process": cmd_oc_process,
    "drop-kinds": cmd_drop_kinds,
    "restricted": cmd_restricted,
    "assert-chart": cmd_assert_chart,
    "toml-roundtrip": cmd_toml_roundtrip,
    "assert-openshift-webhook": cmd_assert_openshift_webhook,
    "same-objects": cmd_same_objects,
    "elf-interp": cmd_elf_interp,
    "rbac-table": cmd_rbac_table,
    "keep-kinds": cmd_keep_kinds,
    "set-namespace": cmd_set_namespace,
    "netpol-covers": cmd_netpol_covers,
    "assert-controller-netpol": cmd_assert_controller_netpol,
    "doc-values": cmd_doc_values,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[1]](*argv[2:])
    except CheckError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (KeyError, IndexError, TypeError) as e:
        print(f"unexpected manifest shape: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
