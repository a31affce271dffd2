{{- define "carbontrack.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "carbontrack.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "carbontrack.labels" -}}
app.kubernetes.io/name: {{ include "carbontrack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "carbontrack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carbontrack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "carbontrack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "carbontrack.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "carbontrack.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "carbontrack.tlsSecret" -}}
{{- printf "%s-tls" (include "carbontrack.fullname" .) -}}
{{- end -}}

{{- define "carbontrack.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{- /* The metric gates' Prometheus endpoints as the operator reads them (a JSON list of {name, url});
a name listed twice fails the render, since a gate naming it could not say which it meant. */ -}}
{{- define "carbontrack.prometheusEndpoints" -}}
{{- $names := list -}}
{{- range .Values.prometheus.endpoints -}}
{{- if has .name $names -}}
{{- fail (printf "prometheus.endpoints: %s is listed twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- toJson .Values.prometheus.endpoints -}}
{{- end -}}
