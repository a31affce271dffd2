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

{{/*
Shards (operator.shards): a Deployment, a Service, a peering object and a PodDisruptionBudget each.
One shard renders the objects of an operator without shards, names unchanged. With several, shard K's
Deployment and PodDisruptionBudget are <fullname>-shard-K and its pods carry carbontrack.io/shard: K;
its Service and peering object are named the same way, except shard 0's, which keep the unsharded
names: pods built before sharding report to that Service, and shard 0 serves their jobs.
Each helper below takes (list $ K).
*/}}
{{- define "carbontrack.sharded" -}}
{{- if gt (int .Values.operator.shards) 1 }}true{{ end -}}
{{- end -}}

{{- define "carbontrack.shardName" -}}
{{- $root := index . 0 -}}
{{- if include "carbontrack.sharded" $root -}}
{{- printf "%s-shard-%d" (include "carbontrack.fullname" $root | trunc 52 | trimSuffix "-") (int (index . 1)) -}}
{{- else -}}
{{- include "carbontrack.fullname" $root -}}
{{- end -}}
{{- end -}}

{{- define "carbontrack.shardService" -}}
{{- if eq (int (index . 1)) 0 -}}
{{- include "carbontrack.fullname" (index . 0) -}}
{{- else -}}
{{- include "carbontrack.shardName" . -}}
{{- end -}}
{{- end -}}

{{- define "carbontrack.shardPeering" -}}
{{- $peering := (index . 0).Values.peering -}}
{{- if eq (int (index . 1)) 0 -}}
{{- $peering -}}
{{- else -}}
{{- printf "%s-shard-%d" $peering (int (index . 1)) -}}
{{- end -}}
{{- end -}}

{{- define "carbontrack.shardHost" -}}
{{- printf "%s.%s.svc" (include "carbontrack.shardService" .) (index . 0).Release.Namespace -}}
{{- end -}}

{{- define "carbontrack.shardSelectorLabels" -}}
{{ include "carbontrack.selectorLabels" (index . 0) }}
{{- if include "carbontrack.sharded" (index . 0) }}
carbontrack.io/shard: {{ index . 1 | quote }}
{{- end }}
{{- end -}}

{{- define "carbontrack.shardLabels" -}}
{{ include "carbontrack.labels" (index . 0) }}
{{- if include "carbontrack.sharded" (index . 0) }}
carbontrack.io/shard: {{ index . 1 | quote }}
{{- end }}
{{- end -}}

{{/* Every shard's Service name: one certificate (one Secret, one CA) serves them all. */}}
{{- define "carbontrack.tlsServerNames" -}}
{{- $names := list -}}
{{- range $k := until (int $.Values.operator.shards) -}}
{{- $host := include "carbontrack.shardHost" (list $ $k) -}}
{{- $names = append $names $host -}}
{{- $names = append $names (printf "%s.cluster.local" $host) -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "carbontrack.validateShards" -}}
{{- $shards := int .Values.operator.shards -}}
{{- range .Values.operator.drainingShards -}}
{{- if ge (int .) $shards -}}
{{- fail (printf "operator.drainingShards: shard %v is not one of 0..%d (operator.shards: %d)" . (sub $shards 1) $shards) -}}
{{- end -}}
{{- end -}}
{{- if ge (len (uniq .Values.operator.drainingShards)) $shards -}}
{{- fail "operator.drainingShards: every shard is draining; at least one must take new jobs" -}}
{{- end -}}
{{- end -}}
