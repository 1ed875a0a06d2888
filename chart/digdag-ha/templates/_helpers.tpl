{{/* Labels that select this release's pods (every pod the chart renders carries them). */}}
{{- define "digdag-ha.selectorLabels" -}}
app.kubernetes.io/name: digdag
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels shared by every object. */}}
{{- define "digdag-ha.labels" -}}
{{ include "digdag-ha.selectorLabels" . }}
app.kubernetes.io/part-of: digdag-ha
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Role flags of (list $ role) in .Values.layout: the same as lib/roles.ts LAYOUT_FLAGS. */}}
{{- define "digdag-ha.roleFlags" -}}
{{- $ := index . 0 -}}{{- $role := index . 1 -}}
{{- $worker := dict "ui" (list "--disable-local-agent" "--disable-scheduler") "scheduler" (list "--disable-local-agent" "--disable-executor-loop") "worker" (list "--disable-scheduler") -}}
{{- $split := dict "ui" (list "--disable-executor-loop" "--disable-local-agent" "--disable-scheduler") "workflow" (list "--disable-local-agent" "--disable-scheduler") "scheduler" (list "--disable-local-agent" "--disable-executor-loop") "agent" (list "--disable-executor-loop" "--disable-scheduler") -}}
{{- $layout := get (dict "worker" $worker "split" $split) $.Values.layout | default dict -}}
{{- toJson (get $layout $role | default list) -}}
{{- end -}}

{{/* The roles of .Values.layout, in order: the same as lib/roles.ts LAYOUT_ROLES. */}}
{{- define "digdag-ha.layoutRoles" -}}
{{- $layouts := dict "worker" (list "ui" "scheduler" "worker") "split" (list "ui" "workflow" "scheduler" "agent") -}}
{{- toJson (required "layout must be worker or split" (get $layouts .Values.layout)) -}}
{{- end -}}

{{/* The role that runs tasks (scaled with the queue): worker, or agent in the split layout. */}}
{{- define "digdag-ha.taskRole" -}}
{{- if eq .Values.layout "split" }}agent{{ else }}worker{{ end -}}
{{- end -}}

{{- define "digdag-ha.dbHost" -}}
{{- if .Values.database.external.enabled }}{{ required "database.external.host is required" .Values.database.external.host }}{{ else }}digdag-postgres{{ end -}}
{{- end -}}

{{- define "digdag-ha.dbPort" -}}
{{- if .Values.database.external.enabled }}{{ .Values.database.external.port }}{{ else }}5432{{ end -}}
{{- end -}}

{{- define "digdag-ha.apiSecretName" -}}
{{- default "digdag-api-credentials" .Values.auth.existingSecret -}}
{{- end }}

{{- define "digdag-ha.secretName" -}}
{{- default "digdag-secrets" .Values.secrets.existingSecret -}}
{{- end -}}

{{/* server.properties of one role: byte-for-byte what lib/properties.ts generates. */}}
{{- define "digdag-ha.properties" -}}
{{- $ := index . 0 -}}{{- $role := index . 1 -}}
{{- $v := $.Values -}}
# digdag-ha: {{ $role }} role. Generated from the digdag-ha configuration; do not edit.
server.bind = 0.0.0.0
server.port = 65432
database.type = postgresql
database.host = {{ include "digdag-ha.dbHost" $ }}
database.port = {{ include "digdag-ha.dbPort" $ }}
database.database = {{ $v.database.name }}
database.user = {{ $v.database.user }}
database.maximumPoolSize = {{ $v.database.poolSize }}
database.minimumPoolSize = {{ min 2 $v.database.poolSize }}
database.migrate = false
database.queue.expireLockInterval = {{ $v.database.expireLockInterval }}
agent.max-task-threads = {{ $v.agent.maxTaskThreads }}
agent.heartbeat-interval = {{ $v.agent.heartbeatInterval }}
agent.lock-retention-time = {{ $v.agent.lockRetentionTime }}
agent.command_executor.type = simple
executor.enqueue_random_fetch = true
metrics.enable = jmx
metrics.jmx.categories = all
server.jmx.port = {{ $v.metrics.jmxPort }}
{{- if eq $v.logs.server "gcs" }}
log-server.type = gcs
log-server.gcs.bucket = {{ required "logs.gcsBucket is required with logs.server=gcs" $v.logs.gcsBucket }}
log-server.gcs.path = {{ $v.logs.gcsPath }}
log-server.gcs.direct_download = false
{{- end }}
{{ end -}}

{{/* JVM flags of the metrics agent (lib/metrics.ts podMetricsJvmArgs), appended to a server's JAVA_OPTS. */}}
{{- define "digdag-ha.metricsJvmArgs" -}}
--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED -Djdk.attach.allowAttachSelf=true -Dcom.sun.management.jmxremote.host=127.0.0.1 -javaagent:/opt/jmx-exporter/jmx_prometheus_javaagent.jar=0.0.0.0:{{ .Values.metrics.port }}:/etc/digdag-metrics/config.yaml
{{- end }}

{{/* An IPv4 address as a number (for the CIDR arithmetic of digdag-ha.ipBlock). */}}
{{- define "digdag-ha.ipv4" -}}
{{- $n := 0 -}}
{{- range $o := splitList "." . }}{{ $n = add (mul $n 256) (atoi $o) }}{{ end -}}
{{- $n -}}
{{- end -}}

{{/* ipBlock of a CIDR with the private ranges it strictly contains carved out, as
lib/kube/security-render.ts exceptPrivate does (IPv6: none). */}}
{{- define "digdag-ha.ipBlock" -}}
{{- $except := list -}}
{{- if not (contains ":" .) -}}
{{- $cidr := splitList "/" . -}}
{{- $bits := atoi (index $cidr 1) -}}
{{- $unit := 1 -}}
{{- range until (sub 32 $bits | int) }}{{ $unit = mul $unit 2 }}{{ end -}}
{{- $n := include "digdag-ha.ipv4" (index $cidr 0) | int64 -}}
{{- range $p := list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" -}}
{{- $inner := splitList "/" $p -}}
{{- if and (lt $bits (atoi (index $inner 1))) (eq (div $n $unit) (div (include "digdag-ha.ipv4" (index $inner 0) | int64) $unit)) -}}
{{- $except = append $except $p -}}
{{- end -}}
{{- end -}}
{{- end -}}
ipBlock:
  cidr: {{ . }}
  {{- with $except }}
  except: {{ toJson . }}
  {{- end }}
{{- end -}}

{{/* Egress rule for DNS: the kube-dns pods and networkPolicy.dnsCidrs, UDP and TCP 53. */}}
{{- define "digdag-ha.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
    {{- range .Values.networkPolicy.dnsCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - { port: 53, protocol: UDP }
    - { port: 53, protocol: TCP }
{{- end -}}

{{/* "true" when the chart's Ingress is the GKE one (ingress.tls.mode=gke-managed), "" otherwise. */}}
{{- define "digdag-ha.gkeEdge" -}}
{{- if and .Values.ingress.enabled (eq .Values.ingress.tls.mode "gke-managed") }}true{{ end -}}
{{- end -}}

{{- define "digdag-ha.edgeAuthSecretName" -}}
{{- default "digdag-edge-auth" .Values.edgeAuth.existingSecret -}}
{{- end -}}

{{/* Value combinations that cannot work: one message each, naming the fix. */}}
{{- define "digdag-ha.validateEdge" -}}
{{- $ing := .Values.ingress -}}
{{- $edge := .Values.edgeAuth.mode -}}
{{- if and $ing.enabled (eq $ing.tls.mode "gke-managed") (not $ing.host) -}}
{{- fail "ingress.tls.mode=gke-managed needs ingress.host: Google-managed certificates are issued per domain. Set ingress.host=digdag.example.com (a DNS name pointing at the Ingress address), or ingress.tls.mode=cert-manager" -}}
{{- end -}}
{{- if and (ne $edge "none") (not $ing.enabled) -}}
{{- fail (printf "edgeAuth.mode=%s works at the chart's Ingress: set ingress.enabled=true, or edgeAuth.mode=none" $edge) -}}
{{- end -}}
{{- if eq $edge "nginx-basic" -}}
{{- if eq $ing.tls.mode "gke-managed" -}}
{{- fail "edgeAuth.mode=nginx-basic needs the nginx Ingress, not ingress.tls.mode=gke-managed: on GKE use edgeAuth.mode=iap, or set ingress.tls.mode=cert-manager" -}}
{{- end -}}
{{- if not .Values.edgeAuth.existingSecret -}}
{{- if ne .Values.auth.mode "basic" -}}
{{- fail "edgeAuth.mode=nginx-basic hashes Digdag's own user and password, and auth.mode=none has none: set auth.mode=basic, or give an htpasswd Secret (key auth) as edgeAuth.existingSecret" -}}
{{- end -}}
{{- if .Values.auth.existingSecret -}}
{{- fail "edgeAuth.mode=nginx-basic cannot hash the password of auth.existingSecret (the chart never reads it): create an htpasswd Secret (key auth) with the same user and password and set edgeAuth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $edge "iap" -}}
{{- if ne $ing.tls.mode "gke-managed" -}}
{{- fail "edgeAuth.mode=iap works only behind the GKE Ingress: set ingress.tls.mode=gke-managed (with ingress.host), or use edgeAuth.mode=nginx-basic" -}}
{{- end -}}
{{- if eq .Values.auth.mode "basic" -}}
{{- /* Digdag's 401 carries no WWW-Authenticate, so behind IAP the browser would never prompt. */ -}}
{{- fail "edgeAuth.mode=iap with auth.mode=basic leaves the web UI without a way to send Digdag's password: with IAP set auth.mode=none (IAP authenticates every request), or use edgeAuth.mode=nginx-basic" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod Security "restricted" labels of the release namespace (as manifests/base/namespace.yaml). */}}
{{- define "digdag-ha.podSecurityLabels" -}}
pod-security.kubernetes.io/enforce: restricted
pod-security.kubernetes.io/enforce-version: latest
pod-security.kubernetes.io/warn: restricted
pod-security.kubernetes.io/audit: restricted
{{- end -}}

{{/* NOTES.txt's security warnings; lookup finds nothing under helm template (then the label command is shown). */}}
{{- define "digdag-ha.securityNotes" -}}
{{- $ns := .Release.Namespace -}}
{{- $ing := .Values.ingress -}}
{{- if and $ing.enabled (eq $ing.tls.mode "none") }}
WARNING: ingress.tls.mode=none: the Ingress serves plain HTTP; passwords cross the network in clear text.
{{- else if and $ing.enabled (eq $ing.tls.mode "cert-manager") (not $ing.host) }}
WARNING: ingress.host is empty: cert-manager cannot issue a certificate without a host name, so nginx
serves its self-signed default certificate (HTTP still redirects to HTTPS). Set ingress.host for a real one.
{{- end }}
{{- if eq .Values.auth.mode "none" }}
{{- if eq .Values.edgeAuth.mode "iap" }}
auth.mode=none behind IAP: IAP authenticates every request through the Ingress; a port-forward skips
it (RBAC on pods/portforward decides who may).
{{- else }}
WARNING: auth.mode=none: Digdag accepts every request; anyone who reaches its port can run commands through sh> tasks.
{{- end }}
{{- end }}
{{- if not .Values.networkPolicy.enabled }}
WARNING: networkPolicy.enabled=false: every Digdag pod and PostgreSQL accept connections from anywhere in the cluster.
{{- else if and .Values.database.external.enabled (not (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" .Values.database.external.host)) }}
WARNING: database.external.host is {{ .Values.database.external.host }}, not an address: NetworkPolicy cannot allow a DNS
name. Set it to the database's IP address, or allow its address (port {{ .Values.database.external.port }}) in a NetworkPolicy
of your own for the pods labelled digdag-ha/db-client=true; otherwise Digdag cannot reach it.
{{- end }}
{{- if not .Values.namespace.create }}
{{- $live := lookup "v1" "Namespace" "" $ns }}
{{- $labels := dict }}
{{- if $live }}{{ $labels = $live.metadata.labels | default dict }}{{ end }}
{{- $enforce := get $labels "pod-security.kubernetes.io/enforce" }}
{{- if ne $enforce "restricted" }}
{{- $want := include "digdag-ha.podSecurityLabels" . | fromYaml }}
{{ if $live -}}
WARNING: namespace {{ $ns }} does not enforce Pod Security "restricted"{{ with $enforce }} (enforce={{ . }}){{ end }}; the chart does not own it. Label it:
{{- else -}}
Pod Security: namespace {{ $ns }} could not be read (helm template, a client-side dry run, or not created yet).
Make sure it enforces "restricted"; the chart does not own it:
{{- end }}
  kubectl label --overwrite namespace {{ $ns }}{{ range $k := keys $want | sortAlpha }} {{ $k }}={{ get $want $k }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}
