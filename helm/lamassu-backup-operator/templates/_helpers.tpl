{{- define "lbo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "lbo.serviceAccountName" -}}
{{- default (include "lbo.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "lbo.labels" -}}
app.kubernetes.io/name: lamassu-backup-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lbo.selectorLabels" -}}
app.kubernetes.io/name: lamassu-backup-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
