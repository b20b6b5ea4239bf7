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
    - name: {{ .name }}
      image: {{ include "obleth.image" $ctx }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      command: ["/usr/local/bin/obleth-migrator"]
      args:
        {{- toYaml .args | nindent 8 }}
      env:
        {{- include "obleth.databaseEnv" (dict "ctx" $ctx "name" "DATABASE_URL") | nindent 8 }}
        - name: OBLETH_LOG__FORMAT
          value: json
      resources:
        {{- toYaml $ctx.Values.migrations.job.resources | nindent 8 }}
      securityContext:
        {{- include "obleth.containerSecurityContext" $ctx | nindent 8 }}
{{- end }}
