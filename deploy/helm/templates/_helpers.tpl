{{/*
Common labels for every object of the release.
*/}}
{{- define "kip.labels" -}}
app.kubernetes.io/name: kubernetes-image-puller
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
{{- end -}}

{{/*
Selector of the controller pods. `app: <deploymentName>` is what the upstream
chart used; a Deployment's selector is immutable, so it is kept as is.
*/}}
{{- define "kip.selectorLabels" -}}
app: {{ .Values.deploymentName | quote }}
{{- end -}}

{{/*
The controller's own image, also the image that provides kip-sleep. Required,
and never the upstream image: that one runs the upstream Go program, which reads
only environment variables and would silently ignore this chart's config.
*/}}
{{- define "kip.image" -}}
{{- $repo := toString (.Values.image.repository | default "") -}}
{{- $build := "build it from this repository's Dockerfile and push it (docker build -t REGISTRY/kubernetes-image-puller:TAG . && docker push REGISTRY/kubernetes-image-puller:TAG), then install with --set image.repository=REGISTRY/kubernetes-image-puller --set image.tag=TAG (docs/deploy.md, \"Building the image\")" -}}
{{- if not $repo -}}
{{- fail (printf "image.repository is required: this chart runs the Rust kubernetes-image-puller, whose image is published by each fork's release workflow (ghcr.io/OWNER/kubernetes-image-puller) or built by you; %s" $build) -}}
{{- end -}}
{{- if regexMatch "(^|/)eclipse/kubernetes-image-puller$" $repo -}}
{{- fail (printf "image.repository %q is the upstream Go program, which reads only environment variables and would ignore this chart's config and flags; swap the image: %s. The rest of an upstream values file works unchanged" $repo $build) -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString (.Values.image.tag | default .Chart.AppVersion)) -}}
{{- end -}}
{{- end -}}

{{/*
checkov skip annotations (`checkov.io/skipN: CHECK=reason`) for the controller's
Deployment: its by-design findings, each with its reason where an admin reads
it. checkov splits on every "=", so reasons contain none. Empty when none apply.
*/}}
{{- define "kip.controllerCheckovSkips" -}}
{{- $skips := list "CKV_K8S_38=the controller calls the Kubernetes API with this token; the cache pods mount none" -}}
{{- if not .Values.image.digest -}}
{{- $skips = append $skips "CKV_K8S_43=image.digest is empty so the installer's tag is used; set image.digest to pin the image" -}}
{{- end -}}
{{- if ne (toString .Values.image.pullPolicy) "Always" -}}
{{- $skips = append $skips (printf "CKV_K8S_15=pullPolicy %s; the installer names a tag of their own build or a digest; set image.pullPolicy Always to re-check the registry on each start" (toString (.Values.image.pullPolicy | default "IfNotPresent"))) -}}
{{- end -}}
{{- if not .Values.networkPolicy.controller.enabled -}}
{{- $skips = append $skips "CKV2_K8S_6=the API server address is cluster specific so this policy is opt-in; set networkPolicy.controller.enabled (with apiServerCIDRs) to restrict the controller" -}}
{{- end -}}
{{- range $i, $s := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $s | quote }}
{{- end }}
{{- end -}}

{{/*
The metrics Service's name. A ServiceMonitor's targets carry it as their `job`
label, which the PrometheusRule's default selector matches.
*/}}
{{/* The admission webhook's ValidatingWebhookConfiguration (cluster-scoped: unique per install). */}}
{{- define "kip.webhookConfigurationName" -}}
{{- .Values.webhook.configurationName | default (printf "%s-%s" .Release.Namespace .Values.deploymentName) | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/*
"true" when the controller keeps the webhook's certificates and configuration itself (webhook.enabled,
webhook.certManager.enabled off); empty otherwise.
*/}}
{{- define "kip.webhookSelfManaged" -}}
{{- if and .Values.webhook.enabled (not (.Values.webhook.certManager | default dict).enabled) -}}true{{- end -}}
{{- end -}}

{{/* "true" when cert-manager issues the webhook's certificate and the chart renders its configuration. */}}
{{- define "kip.webhookCertManager" -}}
{{- if and .Values.webhook.enabled (.Values.webhook.certManager | default dict).enabled -}}true{{- end -}}
{{- end -}}

{{/* The cert-manager Certificate (and its self-signed Issuer) of the webhook. */}}
{{- define "kip.webhookCertificateName" -}}
{{- printf "%s-webhook" .Values.deploymentName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the controller reads the cert-manager Secret (--webhook-cert-dir). */}}
{{- define "kip.webhookCertDir" -}}
/var/run/kubernetes-image-puller/webhook-tls
{{- end -}}

{{- define "kip.metricsServiceName" -}}
{{- printf "%s-metrics" .Values.deploymentName | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
PromQL label matchers that pick this release's controller series in every
alert rule: prometheusRule.selector, else the job and namespace labels that the
chart's ServiceMonitor gives its targets.
*/}}
{{- define "kip.metricsSelector" -}}
{{- $sel := trim (toString (.Values.prometheusRule.selector | default "")) -}}
{{- if $sel -}}
{{- $sel -}}
{{- else -}}
{{- printf "job=%s,namespace=%s" (include "kip.metricsServiceName" . | toJson) (.Release.Namespace | toJson) -}}
{{- end -}}
{{- end -}}

{{/* Extra labels of every alert (prometheusRule.alertLabels), as YAML; empty when none. */}}
{{- define "kip.alertLabels" -}}
{{- with .Values.prometheusRule.alertLabels }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{/*
`runbook_url: <prometheusRule.runbookBaseUrl><alert name in lower case>` for
(list $ "AlertName"); empty when no base URL is set. The lower-case name is the
anchor GitHub and GitLab give a heading named after the alert.
*/}}
{{- define "kip.runbookUrl" -}}
{{- $base := toString ((index . 0).Values.prometheusRule.runbookBaseUrl | default "") -}}
{{- if $base -}}
runbook_url: {{ printf "%s%s" $base (lower (index . 1)) | quote }}
{{- end -}}
{{- end -}}

{{- define "kip.serviceAccountName" -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kip.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
Memory limit of the cache containers: `cachingMemoryLimit` wins over the
upstream chart's misspelt `cachingMemeryLimit`; 20Mi when neither is set.
*/}}
{{- define "kip.cachingMemoryLimit" -}}
{{- $cm := .Values.configMap -}}
{{- coalesce (toString ($cm.cachingMemoryLimit | default "")) (toString ($cm.cachingMemeryLimit | default "")) "20Mi" -}}
{{- end -}}

{{/* A value given as a JSON string (upstream) or as YAML (map/list): JSON string out. */}}
{{- define "kip.jsonString" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* Upstream IMAGES: a `name=image;...` string, or a map name -> image. */}}
{{- define "kip.imagesString" -}}
{{- if kindIs "map" . -}}
{{- range $name, $image := . }}{{ $name }}={{ $image }};{{ end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Upstream IMAGE_PULL_SECRETS: `a;b` string or a list of names. */}}
{{- define "kip.pullSecretsString" -}}
{{- if kindIs "slice" . -}}
{{- join ";" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/*
TOML value of any YAML value: strings as TOML basic strings (a JSON string
literal is a valid TOML basic string: same escapes, \uXXXX for the rest),
maps as one-line inline tables with quoted keys, lists as arrays. Integral
numbers are written as integers. Null map entries are left out (TOML has no null).
*/}}
{{- define "kip.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 $v) (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "map" $v -}}
{{- $parts := list -}}
{{- range $k, $x := $v -}}
{{- if not (kindIs "invalid" $x) -}}
{{- $parts = append $parts (printf "%s = %s" (toJson (toString $k)) (include "kip.toml.value" $x)) -}}
{{- end -}}
{{- end -}}
{{- if $parts -}}{ {{ join ", " $parts }} }{{- else -}}{}{{- end -}}
{{- else if kindIs "slice" $v -}}
{{- $parts := list -}}
{{- range $x := $v -}}
{{- $parts = append $parts (include "kip.toml.value" $x) -}}
{{- end -}}
[{{ join ", " $parts }}]
{{- else -}}
{{- toJson (toString $v) -}}
{{- end -}}
{{- end -}}

{{/*
Per-set fields: values key -> config.toml key, and whether the value is a
Kubernetes quantity (always written as a TOML string).
*/}}
{{- define "kip.setFields" -}}
memoryRequest: memory_request
memoryLimit: memory_limit
cpuRequest: cpu_request
cpuLimit: cpu_limit
nodeSelector: node_selector
tolerations: tolerations
affinity: affinity
imagePullSecrets: image_pull_secrets
priorityClassName: priority_class_name
annotations: annotations
refresh: refresh
{{- end -}}

{{/*
TOML `key = value` lines of a set or of the defaults (a map of values keys).
Keys left out, null or "" are not written, so the set inherits the default.
*/}}
{{- define "kip.toml.setBody" -}}
{{- $obj := . -}}
{{- $fields := include "kip.setFields" . | fromYaml -}}
{{- $quantities := list "memoryRequest" "memoryLimit" "cpuRequest" "cpuLimit" -}}
{{- range $key := list "memoryRequest" "memoryLimit" "cpuRequest" "cpuLimit" "nodeSelector" "tolerations" "affinity" "imagePullSecrets" "priorityClassName" "annotations" "refresh" }}
{{- $val := get $obj $key }}
{{- /* Null and "" mean unset (inherit), as an empty upstream env var does. */}}
{{- if and (hasKey $obj $key) (not (kindIs "invalid" $val)) (ne (toString $val) "") }}
{{- if has $key $quantities }}{{ $val = toString $val }}{{ end }}
{{ get $fields $key }} = {{ include "kip.toml.value" $val }}
{{- end }}
{{- end }}
{{- end -}}

{{/* config.toml rendered from .Values.defaults and .Values.sets. */}}
{{/* The pull Secret names of `defaults` and `sets` (a JSON list), for the Role's resourceNames. */}}
{{- define "kip.pullSecretNames" -}}
{{- $names := list -}}
{{- if .Values.sets -}}
{{- range (prepend .Values.sets (.Values.defaults | default dict)) -}}
{{- range (.imagePullSecrets | default list) -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | sortAlpha | toJson -}}
{{- end -}}

{{- define "kip.configToml" -}}
{{- $cm := .Values.configMap -}}
{{- $defaults := deepCopy (.Values.defaults | default dict) -}}
{{- if not (hasKey $defaults "memoryRequest") }}{{ $_ := set $defaults "memoryRequest" $cm.cachingMemoryRequest }}{{ end -}}
{{- if not (hasKey $defaults "memoryLimit") }}{{ $_ := set $defaults "memoryLimit" (include "kip.cachingMemoryLimit" .) }}{{ end -}}
{{- if not (hasKey $defaults "cpuRequest") }}{{ $_ := set $defaults "cpuRequest" $cm.cachingCpuRequest }}{{ end -}}
{{- if not (hasKey $defaults "cpuLimit") }}{{ $_ := set $defaults "cpuLimit" $cm.cachingCpuLimit }}{{ end -}}
# Rendered by the kubernetes-image-puller Helm chart from .Values.defaults and .Values.sets.
namespace = {{ include "kip.toml.value" .Release.Namespace }}
caching_interval_hours = {{ int64 $cm.cachingIntervalHours }}
{{- with .Values.refreshCheckInterval }}
refresh_check_interval = {{ include "kip.toml.value" . }}
{{- end }}
kip_image = {{ include "kip.toml.value" (include "kip.image" .) }}
deployment_name = {{ include "kip.toml.value" .Values.deploymentName }}
{{- with .Values.warmGate }}
{{- if .enabled }}

[warm_gate]
{{- with .taint }}
taint = {{ include "kip.toml.value" . }}
{{- end }}
{{- with .timeout }}
timeout = {{ include "kip.toml.value" . }}
{{- end }}
{{- end }}
{{- end }}

[defaults]
{{- include "kip.toml.setBody" $defaults }}
{{- $seen := dict }}
{{- range $set := .Values.sets }}
{{- if hasKey $seen $set.name }}
{{- fail (printf "sets: the name %q is used by more than one set" $set.name) }}
{{- end }}
{{- $_ := set $seen $set.name true }}

[[sets]]
name = {{ include "kip.toml.value" $set.name }}
images = {{ include "kip.toml.value" $set.images }}
{{- include "kip.toml.setBody" $set }}
{{- end }}
{{ end -}}
