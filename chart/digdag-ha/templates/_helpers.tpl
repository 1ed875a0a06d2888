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

{{/* What only the toolkit's TypeScript knows, as data: the role table (lib/roles.ts), the metrics
JVM flags (lib/metrics.ts), the private ranges carved out of egress and the queue-depth query.
files/toolkit.yaml is written by `npm run generate` (lib/kube/chart-files.ts); a test fails when stale. */}}
{{- define "digdag-ha.toolkit" -}}
{{- .Files.Get "files/toolkit.yaml" | fromYaml | toJson -}}
{{- end -}}

{{/* The layout's entry of files/toolkit.yaml: roles (in order), flags per role, taskRole. */}}
{{- define "digdag-ha.layout" -}}
{{- $t := include "digdag-ha.toolkit" . | fromJson -}}
{{- toJson (required "layout must be worker or split" (get $t.layouts .Values.layout)) -}}
{{- end -}}

{{/* Role flags of (list $ role) in .Values.layout (lib/roles.ts LAYOUT_FLAGS). */}}
{{- define "digdag-ha.roleFlags" -}}
{{- $ := index . 0 -}}{{- $role := index . 1 -}}
{{- $layout := include "digdag-ha.layout" $ | fromJson -}}
{{- toJson (get $layout.flags $role | default list) -}}
{{- end -}}

{{/* The roles of .Values.layout, in order (lib/roles.ts LAYOUT_ROLES). */}}
{{- define "digdag-ha.layoutRoles" -}}
{{- toJson (include "digdag-ha.layout" . | fromJson).roles -}}
{{- end -}}

{{/* The role that runs tasks (scaled with the queue): worker, or agent in the split layout. */}}
{{- define "digdag-ha.taskRole" -}}
{{- (include "digdag-ha.layout" . | fromJson).taskRole -}}
{{- end -}}

{{/* "true" when (list $ role) runs users' tasks (lib/roles.ts runsTasks), "" otherwise. */}}
{{- define "digdag-ha.runsTasks" -}}
{{- $ := index . 0 -}}
{{- if has (index . 1) (include "digdag-ha.toolkit" $ | fromJson).runsTasks }}true{{ end -}}
{{- end -}}

{{/* "true" when (list $ role) is behind the UI/API Service and the Ingress (lib/roles.ts servesUsers). */}}
{{- define "digdag-ha.servesUsers" -}}
{{- $ := index . 0 -}}
{{- if has (index . 1) (include "digdag-ha.toolkit" $ | fromJson).servesUsers }}true{{ end -}}
{{- end -}}

{{/* The Digdag image: repository@digest when a digest is given (it wins over the tag), else repository:tag. */}}
{{- define "digdag-ha.image" -}}
{{- if .Values.image.digest }}{{ .Values.image.repository }}@{{ .Values.image.digest }}{{ else }}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{ end -}}
{{- end -}}

{{- define "digdag-ha.dbHost" -}}
{{- if .Values.cloudSqlProxy.instance }}127.0.0.1{{ else if .Values.database.external.enabled }}{{ required "database.external.host is required" .Values.database.external.host }}{{ else }}digdag-postgres{{ end -}}
{{- end -}}

{{- define "digdag-ha.dbPort" -}}
{{- if .Values.cloudSqlProxy.instance }}{{ .Values.cloudSqlProxy.port }}{{ else if .Values.database.external.enabled }}{{ .Values.database.external.port }}{{ else }}5432{{ end -}}
{{- end -}}

{{/*
The Cloud SQL Auth Proxy v2 as a native sidecar (an init container with restartPolicy: Always): it
starts before the pod's other init containers (its startup probe gates them), serves PostgreSQL on
127.0.0.1 to every container of the pod, runs until the pod ends (a Job completes without waiting
for it), and is restarted on its own if it dies. Authenticated by Workload Identity (the pod's
Kubernetes service account acts as the Google one), or with cloudSqlProxy.credentials=keySecret by
the key in cloudSqlProxy.keySecret, else gcp.keySecret (mounted into this container only); nothing when cloudSqlProxy.instance is empty.
*/}}
{{- define "digdag-ha.cloudSqlProxy" -}}
{{- with .Values.cloudSqlProxy }}
{{- if .instance }}
- name: cloud-sql-proxy
  image: {{ .image | quote }}
  imagePullPolicy: {{ .pullPolicy }}
  restartPolicy: Always
  args:
    - --structured-logs
    - --health-check
    - --http-address=0.0.0.0
    - --http-port={{ .healthPort }}
    - --port={{ .port }}
    - --exit-zero-on-sigterm
    {{- if .privateIp }}
    - --private-ip
    {{- end }}
    {{- with .adminApiEndpoint }}
    - --sqladmin-api-endpoint={{ . }}
    {{- end }}
    {{- if eq .credentials "keySecret" }}
    - --credentials-file=/etc/cloud-sql-proxy-key/key.json
    {{- end }}
    - {{ .instance | quote }}
  ports:
    - { name: proxy-health, containerPort: {{ .healthPort }} }
  startupProbe:
    httpGet: { path: /startup, port: proxy-health }
    periodSeconds: 1
    failureThreshold: 60
  livenessProbe:
    httpGet: { path: /liveness, port: proxy-health }
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  {{- if $.Values.googleApis.caBundle }}
  # googleApis.caBundle: the proxy (Go) trusts its image's CA file and every file in SSL_CERT_DIR,
  # so a private Admin API endpoint's CA is trusted besides the image's own.
  env:
    - { name: SSL_CERT_DIR, value: /etc/cloud-sql-proxy-ca }
  {{- end }}
  {{- if or $.Values.googleApis.caBundle (eq .credentials "keySecret") }}
  volumeMounts:
    {{- if $.Values.googleApis.caBundle }}
    - { name: cloud-sql-proxy-ca, mountPath: /etc/cloud-sql-proxy-ca, readOnly: true }
    {{- end }}
    {{- if eq .credentials "keySecret" }}
    - { name: cloud-sql-proxy-key, mountPath: /etc/cloud-sql-proxy-key, readOnly: true }
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The volumes the Cloud SQL Auth Proxy sidecar mounts (googleApis.caBundle; the key with
credentials=keySecret, not optional: a missing Secret keeps the pod from starting, with an event
naming it); nothing otherwise. */}}
{{- define "digdag-ha.cloudSqlProxyVolumes" -}}
{{- if .Values.cloudSqlProxy.instance }}
{{- if .Values.googleApis.caBundle }}
- name: cloud-sql-proxy-ca
  configMap:
    name: digdag-extra-ca
{{- end }}
{{- if eq .Values.cloudSqlProxy.credentials "keySecret" }}
- name: cloud-sql-proxy-key
  secret:
    secretName: {{ .Values.cloudSqlProxy.keySecret | default .Values.gcp.keySecret | default "digdag-gcp-key" }}
    items:
      - { key: key.json, path: key.json }
{{- end }}
{{- end }}
{{- end -}}

{{/* The proxy stands in for the database address: it needs the external database, and a client outside the pods cannot reach it. */}}
{{- define "digdag-ha.validateCloudSqlProxy" -}}
{{- if .Values.cloudSqlProxy.instance -}}
{{- if not (regexMatch "^[a-z][-a-z0-9.:]*:[a-z]+-[a-z]+[0-9]+:[a-z][-a-z0-9]*$" .Values.cloudSqlProxy.instance) -}}
{{- fail (printf "cloudSqlProxy.instance=%s is not an instance connection name: set it to PROJECT:REGION:INSTANCE (gcloud sql instances describe INSTANCE --format='value(connectionName)')" .Values.cloudSqlProxy.instance) -}}
{{- end -}}
{{- if not .Values.database.external.enabled -}}
{{- fail "cloudSqlProxy.instance needs database.external.enabled=true: the proxy replaces the address of an external (Cloud SQL) database, not the in-cluster PostgreSQL" -}}
{{- end -}}
{{- if eq .Values.autoscaling.mode "keda" -}}
{{- fail "autoscaling.mode=keda with cloudSqlProxy.instance: KEDA's operator runs the queue query itself and cannot reach a database that only the Digdag pods' sidecars serve; use autoscaling.mode=hpa, or none" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* googleApis.address: Google's API host names lead to a private endpoint in a pod (tests,
air-gapped setups); nothing without it. Every pod that calls Google has it: the Digdag pods, and the
migration Job and the queue exporter for their Cloud SQL Auth Proxy. */}}
{{- define "digdag-ha.googleApisHostAliases" -}}
{{- with .Values.googleApis.address }}
# googleApis.address: Google's API host names lead to a private endpoint (tests, air-gapped setups).
hostAliases:
  - ip: {{ . | quote }}
    hostnames: {{ toJson $.Values.googleApis.hostNames }}
{{- end }}
{{- end -}}

{{/* googleApis (a private endpoint for Google's APIs, tests and air-gapped setups): what cannot work, refused with the fix. */}}
{{- define "digdag-ha.validateGoogleApis" -}}
{{- $g := .Values.googleApis -}}
{{- if and $g.address (hasPrefix "127." $g.address) -}}
{{- fail (printf "googleApis.address=%s is a loopback address: in a pod it is the pod itself. Set the address of the endpoint as the pods reach it (a node or pod address)" $g.address) -}}
{{- end -}}
{{- if and $g.metadataServer (hasPrefix "127." $g.metadataServer) -}}
{{- fail (printf "googleApis.metadataServer=%s is a loopback address: in a pod it is the pod itself. Set the metadata server's address:port as the pods reach it (a node or pod address)" $g.metadataServer) -}}
{{- end -}}
{{- if and $g.address (not $g.hostNames) -}}
{{- fail "googleApis.address needs googleApis.hostNames: the Google API host names to lead there (e.g. www.googleapis.com, oauth2.googleapis.com)" -}}
{{- end -}}
{{- if $g.caBundle -}}
{{- if regexMatch "PRIVATE KEY" $g.caBundle -}}
{{- fail "googleApis.caBundle holds a private key: it is rendered into a ConfigMap, so give it the CA certificates only (-----BEGIN CERTIFICATE----- blocks)" -}}
{{- end -}}
{{- if not (regexMatch "-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\\s]+-----END CERTIFICATE-----" $g.caBundle) -}}
{{- fail "googleApis.caBundle is not a PEM certificate: give the CA certificates as PEM (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----), e.g. --set-file googleApis.caBundle=ca.pem" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "digdag-ha.apiSecretName" -}}
{{- default "digdag-api-credentials" .Values.auth.existingSecret -}}
{{- end }}

{{- define "digdag-ha.secretName" -}}
{{- default "digdag-secrets" .Values.secrets.existingSecret -}}
{{- end -}}

{{/* server.properties of (list $ role): files/server.properties, generated from lib/properties.ts's
one table (the local processes' source too), its values references to these values. */}}
{{- define "digdag-ha.properties" -}}
{{- $ := index . 0 -}}
{{- tpl ($.Files.Get "files/server.properties") (dict "Values" $.Values "Template" $.Template "Role" (index . 1)) -}}
{{- end -}}

{{/* migrate.properties (files/migrate.properties, the same generator). */}}
{{- define "digdag-ha.migrateProperties" -}}
{{- tpl (.Files.Get "files/migrate.properties") (dict "Values" .Values "Template" .Template) -}}
{{- end -}}

{{/* JVM flags of the metrics agent (lib/metrics.ts podMetricsJvmArgs), appended to a server's JAVA_OPTS. */}}
{{- define "digdag-ha.metricsJvmArgs" -}}
{{- tpl (include "digdag-ha.toolkit" . | fromJson).metricsJvmArgs . -}}
{{- end }}

{{/* An IPv4 address as a number (for the CIDR arithmetic of digdag-ha.ipBlock). */}}
{{- define "digdag-ha.ipv4" -}}
{{- $n := 0 -}}
{{- range $o := splitList "." . }}{{ $n = add (mul $n 256) (atoi $o) }}{{ end -}}
{{- $n -}}
{{- end -}}

{{/* ipBlock of (list $ cidr) with the private ranges (files/toolkit.yaml privateCidrs) it strictly
contains carved out (IPv6: none). */}}
{{- define "digdag-ha.ipBlock" -}}
{{- $privates := (include "digdag-ha.toolkit" (index . 0) | fromJson).privateCidrs -}}
{{- $c := index . 1 -}}
{{- $except := list -}}
{{- if not (contains ":" $c) -}}
{{- $cidr := splitList "/" $c -}}
{{- $bits := atoi (index $cidr 1) -}}
{{- $unit := 1 -}}
{{- range until (sub 32 $bits | int) }}{{ $unit = mul $unit 2 }}{{ end -}}
{{- $n := include "digdag-ha.ipv4" (index $cidr 0) | int64 -}}
{{- range $p := $privates -}}
{{- $inner := splitList "/" $p -}}
{{- if and (lt $bits (atoi (index $inner 1))) (eq (div $n $unit) (div (include "digdag-ha.ipv4" (index $inner 0) | int64) $unit)) -}}
{{- $except = append $except $p -}}
{{- end -}}
{{- end -}}
{{- end -}}
ipBlock:
  cidr: {{ $c }}
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

{{/* Pod Security "restricted" labels of the release namespace (templates/namespace.yaml). */}}
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
{{- with .Values.googleApis.address }}
NOTE: googleApis.address={{ . }}: {{ join ", " $.Values.googleApis.hostNames }} lead there in every Digdag pod,
not to Google (a private endpoint for tests or air-gapped setups).
{{- end }}
{{- with .Values.googleApis.metadataServer }}
NOTE: googleApis.metadataServer={{ . }}: every Digdag pod takes its Google identity (Application Default
Credentials) from there, not from the platform's metadata server (tests or air-gapped setups).
{{- end }}
{{- if not .Values.networkPolicy.enabled }}
WARNING: networkPolicy.enabled=false: every Digdag pod and PostgreSQL accept connections from anywhere in the cluster.
{{- else if and .Values.database.external.enabled (not .Values.cloudSqlProxy.instance) (not (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" .Values.database.external.host)) }}
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

{{/* The Patroni members' labels: Patroni selects its pods (and labels its Endpoints) with these;
"cluster-name" is its scope label. */}}
{{- define "digdag-ha.patroniLabels" -}}
{{ include "digdag-ha.selectorLabels" . }}
app.kubernetes.io/component: postgres
cluster-name: digdag-postgres
{{- end -}}
