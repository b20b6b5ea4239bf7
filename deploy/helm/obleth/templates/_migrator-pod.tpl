{{/*
The migrator container: (dict "ctx" $ "name" "migrate" "args" (list ...)).
The hook Jobs run it, and in migrations.mode=initContainer the admin pod
does, with the same image, database Secret, resources and security context.
*/}}
{{- define "obleth.migratorContainer" -}}
{{- $ctx := .ctx }}
name: {{ .name }}
image: {{ include "obleth.image" $ctx }}
imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
command: ["/usr/local/bin/obleth-migrator"]
args:
  {{- toYaml .args | nindent 2 }}
env:
  {{- include "obleth.databaseEnv" (dict "ctx" $ctx "name" "DATABASE_URL") | nindent 2 }}
  - name: OBLETH_LOG__FORMAT
    value: json
resources:
  {{- toYaml $ctx.Values.migrations.job.resources | nindent 2 }}
securityContext:
  {{- include "obleth.containerSecurityContext" $ctx | nindent 2 }}
{{- end }}

{{/* `obleth-migrator up`'s arguments, the same for the hook Job and the init container. */}}
{{- define "obleth.migrateUpArgs" -}}
{{- toYaml (list "up" "--verbose" "--lock-wait-secs" (toString (int .Values.migrations.job.lockWaitSecs))) }}
{{- end }}

{{/*
The pod of a migrator hook Job: (dict "ctx" $ "name" "migrate" "args" (list ...)).
Hook Jobs run before the release's own resources exist on install, so they use
only the database Secret and an optional pre-existing ServiceAccount.
*/}}
{{- define "obleth.migratorPod" -}}
{{- $ctx := .ctx }}
metadata:
  labels:
    {{- include "obleth.selectorLabels" (dict "ctx" $ctx "component" .name) | nindent 4 }}
    app.kubernetes.io/version: {{ include "obleth.version" $ctx | quote }}
spec:
  restartPolicy: Never
  {{- with $ctx.Values.migrations.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "obleth.podSecurityContext" $ctx | nindent 4 }}
  containers:
    - {{ include "obleth.migratorContainer" . | indent 6 | trim }}
{{- end }}

{{/*
migrations.mode, checked against the values that used to choose it: the
removed migrations.job.enabled, and admin.settings.migrations.migrate_on_startup,
which the chart now derives from the mode.
*/}}
{{- define "obleth.migrationsMode" -}}
{{- $mode := .Values.migrations.mode }}
{{- if hasKey .Values.migrations.job "enabled" }}
{{- fail "migrations.job.enabled was replaced by migrations.mode (hook, initContainer or admin; docs/upgrading.md, \"How migrations run\")" }}
{{- end }}
{{- if and (ne $mode "hook") (not .Values.admin.enabled) }}
{{- fail (printf "migrations.mode=%s runs the migrations in the admin pod, which needs admin.enabled=true" $mode) }}
{{- end }}
{{- $m := (default (dict) (get .Values.admin.settings "migrations")) }}
{{- if and (hasKey $m "migrate_on_startup") (ne (get $m "migrate_on_startup") (eq $mode "admin")) }}
{{- fail (printf "admin.settings.migrations.migrate_on_startup=%v contradicts migrations.mode=%s: leave it out, the chart sets it from migrations.mode" (get $m "migrate_on_startup") $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
progressDeadlineSeconds of the Deployments in migrations.mode=initContainer:
the migration (migrations.job.activeDeadlineSeconds) plus the admin's
startup probe budget.
*/}}
{{- define "obleth.initMigrationDeadline" -}}
{{- $s := .Values.admin.probes.startup }}
{{- add (int .Values.migrations.job.activeDeadlineSeconds) (mul (int $s.periodSeconds) (int $s.failureThreshold)) }}
{{- end }}
