{{/* Names, labels, the image, the settings files and the drain budget. */}}

{{- define "obleth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "obleth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "obleth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "obleth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "obleth.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: obleth
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "obleth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "obleth.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "obleth.version" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "obleth.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "obleth.version" .) }}
{{- end }}
{{- end }}

{{/*
The live gateway Deployment (empty without a cluster or before install), in
one place so that scripts/validate-deploy can stand in for the cluster.
*/}}
{{- define "obleth.liveGatewayDeployment" -}}
{{- toYaml (lookup "apps/v1" "Deployment" .Release.Namespace (printf "%s-gateway" (include "obleth.fullname" .))) }}
{{- end }}

{{- define "obleth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "obleth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A TOML value. Helm reads every YAML number as a float, and the services'
settings refuse 5.0 where they expect an integer, so whole numbers are written
without a fraction. Strings are JSON strings, which TOML reads the same.
*/}}
{{- define "obleth.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "slice" . }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "obleth.tomlValue" $v }}{{ end }}]
{{- else }}{{ fail (printf "settings: cannot write %v (%s) as a TOML value" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/* A settings file: { section: { field: value } } as TOML tables. */}}
{{- define "obleth.toml" -}}
{{- $tables := list }}
{{- range $section, $fields := . }}
{{- $lines := list (printf "[%s]" $section) }}
{{- range $field, $value := $fields }}
{{- $lines = append $lines (printf "%s = %s" $field (include "obleth.tomlValue" $value)) }}
{{- end }}
{{- $tables = append $tables (join "\n" $lines) }}
{{- end }}
{{- join "\n\n" $tables }}
{{- end }}

{{/* gateway.toml: the values' settings with the listeners from gateway.ports. */}}
{{- define "obleth.gatewaySettings" -}}
{{- $s := deepCopy .Values.gateway.settings }}
{{- $server := default (dict) (get $s "server") }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.gateway.ports.proxy)) }}
{{- $_ := set $server "ops_listen" (printf "0.0.0.0:%d" (int .Values.gateway.ports.ops)) }}
{{- $_ := set $s "server" $server }}
{{- include "obleth.toml" $s }}
{{- end }}

{{/*
admin.toml: the values' settings with the listener from admin.port, and
migrations.migrate_on_startup from migrations.mode (on only in `admin` mode;
the binary's own default is on, so the other modes write it off).
*/}}
{{- define "obleth.adminSettings" -}}
{{- $s := deepCopy .Values.admin.settings }}
{{- $server := default (dict) (get $s "server") }}
{{- $_ := set $server "listen" (printf "0.0.0.0:%d" (int .Values.admin.port)) }}
{{- $_ := set $s "server" $server }}
{{- $migrations := default (dict) (get $s "migrations") }}
{{- $_ := set $migrations "migrate_on_startup" (eq (include "obleth.migrationsMode" .) "admin") }}
{{- $_ := set $s "migrations" $migrations }}
{{- include "obleth.toml" $s }}
{{- end }}

{{/*
Drain timing of one service: (dict "svc" .Values.gateway "what" "gateway").
There is no preStop sleep: after SIGTERM the service keeps serving for
drain_delay_secs while endpoints drop the pod, so a sleep before SIGTERM
would spend the same seconds twice. The grace period covers the drain delay,
the drain timeout, and the margin for the stream cut and the usage flush.
*/}}

{{/*
A service's drain timeout: its drain_timeout_secs, or for the gateway, whose
default is the longest request it allows, body_timeout_secs (30) + 600 (the
longest provider timeout, for the upstream's headers) + the larger of 600 (a
non-streamed body) and max_stream_secs (600), as `obleth-gateway wiring`
reports it.
*/}}
{{- define "obleth.drainTimeout" -}}
{{- $server := .svc.settings.server }}
{{- if hasKey $server "drain_timeout_secs" }}
{{- int $server.drain_timeout_secs }}
{{- else if eq .what "gateway" }}
{{- add (int (default 30 $server.body_timeout_secs)) 600 (max 600 (int (default 600 $server.max_stream_secs))) }}
{{- else }}
{{- fail (printf "%s.settings.server.drain_timeout_secs is required" .what) }}
{{- end }}
{{- end }}

{{- define "obleth.gracePeriod" -}}
{{- $server := .svc.settings.server }}
{{- $delay := int (required (printf "%s.settings.server.drain_delay_secs is required" .what) $server.drain_delay_secs) }}
{{- $timeout := include "obleth.drainTimeout" . | int }}
{{- /* 15 s: the gateway's stream cut (5 s) and usage flush (10 s) after the drain timeout. */}}
{{- $floor := add $delay $timeout 15 }}
{{- if kindIs "invalid" .svc.terminationGracePeriodSeconds }}
{{- add $delay $timeout (int .svc.shutdownMarginSecs) }}
{{- else if le (int .svc.terminationGracePeriodSeconds) $floor }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed drain_delay_secs + drain_timeout_secs + 15 s for the stream cut and usage flush (%d)" .what (int .svc.terminationGracePeriodSeconds) $floor) }}
{{- else }}
{{- int .svc.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The container securityContext every obleth container runs with. */}}
{{- define "obleth.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "obleth.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The database URL from the existing Secret, as the variable `name`. */}}
{{- define "obleth.databaseEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required" .ctx.Values.database.existingSecret }}
      key: {{ .ctx.Values.database.urlKey }}
{{- end }}

{{/*
extraEnv of one service, refusing a database URL written in clear:
(dict "env" .Values.gateway.extraEnv "what" "gateway"). A URL carries the
password, so it must come from a Secret (valueFrom), never a literal value
in the manifests.
*/}}
{{- define "obleth.extraEnv" -}}
{{- range .env }}
{{- if and (hasKey . "value") (regexMatch "^(DATABASE_URL|OBLETH_DATABASE__(URL|DIRECT_URL))$" .name) }}
{{- fail (printf "%s.extraEnv: %s has a literal value; a database URL holds a password, so take it from a Secret (valueFrom.secretKeyRef, or database.existingSecret)" $.what .name) }}
{{- end }}
{{- end }}
{{- with .env }}
{{- toYaml . }}
{{- end }}
{{- end }}
