{{/*
Names and labels.
*/}}
{{- define "defender-enricher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The full name leaves room for the "-check" suffix of the test pod within the
63 characters of a label value.
*/}}
{{- define "defender-enricher.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "defender-enricher.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "defender-enricher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of every pod of the release: the connector's and the test pod's.
*/}}
{{- define "defender-enricher.instanceLabels" -}}
app.kubernetes.io/name: {{ include "defender-enricher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The Deployment's selector: the component keeps the test pod out of it.
*/}}
{{- define "defender-enricher.selectorLabels" -}}
{{ include "defender-enricher.instanceLabels" . }}
app.kubernetes.io/component: connector
{{- end }}

{{- define "defender-enricher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "defender-enricher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "defender-enricher.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
"true" when the replicas share one budget, cache and pause through Redis.
*/}}
{{- define "defender-enricher.redis" -}}
{{- if and .Values.secrets.existingSecret (get .Values.secrets.env "ENRICHER_REDIS_URL") }}true{{ end }}
{{- end }}

{{/*
Where the budget state file lives: an emptyDir, kept across container
restarts in a pod.
*/}}
{{- define "defender-enricher.stateDir" -}}
/var/lib/defender-enricher
{{- end }}

{{- define "defender-enricher.httpAddr" -}}
{{- get .Values.config "ENRICHER_HTTP_ADDR" | default ":8080" }}
{{- end }}

{{- define "defender-enricher.httpPort" -}}
{{- regexReplaceAll "^.*:" (include "defender-enricher.httpAddr" .) "" | atoi }}
{{- end }}

{{- define "defender-enricher.shutdownTimeout" -}}
{{- get .Values.config "ENRICHER_SHUTDOWN_TIMEOUT" | default "20s" }}
{{- end }}

{{/*
The seconds of a Go duration such as 20s, 1m30s or 1500ms (the schema
admits only such durations), as a float.
*/}}
{{- define "defender-enricher.seconds" -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "μs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]*\\.?[0-9]+(ns|us|µs|μs|ms|s|m|h)" (toString .) -1 }}
{{- $number := regexFind "^[0-9]*\\.?[0-9]+" . }}
{{- $total = addf $total (mulf (float64 $number) (get $units (trimPrefix $number .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the shutdown timeout rounded up to a second,
plus the margin, so that SIGTERM can drain, flush and commit before the
kubelet sends SIGKILL.
*/}}
{{- define "defender-enricher.gracePeriod" -}}
{{- $seconds := include "defender-enricher.seconds" (include "defender-enricher.shutdownTimeout" .) | float64 | ceil | int64 }}
{{- if lt $seconds 1 }}
{{- fail (printf "config.ENRICHER_SHUTDOWN_TIMEOUT: %q is not a duration such as 20s" (include "defender-enricher.shutdownTimeout" .)) }}
{{- end }}
{{- add $seconds .Values.shutdownGraceMarginSeconds }}
{{- end }}

{{/*
One option's value as the connector reads it: a list joined with commas, a
whole number without an exponent (values files give numbers as floats).
*/}}
{{- define "defender-enricher.optionValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
The container's environment, for the Deployment and the test pod.
*/}}
{{- define "defender-enricher.env" -}}
{{- $files := .Values.secrets.files.env }}
{{- range $name, $key := $files }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s: it is set by secrets.files.env.%s too; keep one" $name $name) }}
{{- end }}
{{- end }}
{{- $clientId := .Values.azure.clientId }}
{{- if .Values.azure.workloadIdentity.enabled }}
{{- $clientId = .Values.azure.workloadIdentity.clientId }}
{{- end }}
{{- with .Values.azure.tenantId }}
- name: AZURE_TENANT_ID
  value: {{ . | quote }}
{{- end }}
{{- with $clientId }}
- name: AZURE_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- $config := omit .Values.config "ENRICHER_HTTP_ADDR" "ENRICHER_SHUTDOWN_TIMEOUT" }}
{{- range $name, $value := $config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
- name: {{ $name }}
  value: {{ include "defender-enricher.optionValue" $value | quote }}
{{- end }}
{{- end }}
- name: ENRICHER_HTTP_ADDR
  value: {{ include "defender-enricher.httpAddr" . | quote }}
- name: ENRICHER_SHUTDOWN_TIMEOUT
  value: {{ include "defender-enricher.shutdownTimeout" . | quote }}
{{- if and (not (include "defender-enricher.redis" .)) (not (get .Values.config "ENRICHER_BUDGET_STATE_FILE")) }}
- name: ENRICHER_BUDGET_STATE_FILE
  value: {{ printf "%s/budget.state" (include "defender-enricher.stateDir" .) | quote }}
{{- end }}
{{- range $name, $key := .Values.secrets.env }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.existingSecret | quote }}
      key: {{ $key | quote }}
{{- end }}
{{- range $name, $key := $files }}
- name: {{ $name }}
  value: {{ printf "%s/%s" ($.Values.secrets.files.mountPath | trimSuffix "/") $key | quote }}
{{- end }}
{{- with .Values.goMemLimit }}
- name: GOMEMLIMIT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "defender-enricher.volumeMounts" -}}
- name: state
  mountPath: {{ include "defender-enricher.stateDir" . }}
{{- if .Values.secrets.files.env }}
- name: secret-files
  mountPath: {{ .Values.secrets.files.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "defender-enricher.volumes" -}}
- name: state
  {{- if .Values.stateVolume.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.stateVolume.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ .Values.stateVolume.sizeLimit }}
  {{- end }}
{{- with .Values.secrets.files.env }}
- name: secret-files
  secret:
    secretName: {{ $.Values.secrets.files.secretName | default $.Values.secrets.existingSecret | quote }}
    # 0440: readable by the pod's group (fsGroup 65532), not by others.
    defaultMode: 288
    items:
      {{- range $name, $key := . }}
      - key: {{ $key | quote }}
        path: {{ $key | quote }}
      {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pod's security context: Pod Security "restricted", as the distroless
image's nonroot user (65532).
*/}}
{{- define "defender-enricher.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "defender-enricher.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod labels shared by the connector and the test pod: workload identity's.
*/}}
{{- define "defender-enricher.identityLabels" -}}
{{- if .Values.azure.workloadIdentity.enabled }}
azure.workload.identity/use: "true"
{{- end }}
{{- end }}

{{/*
KEDA's maxReplicaCount, capped at the input topic's partitions: a replica
beyond them would have no partition to consume.
*/}}
{{- define "defender-enricher.kedaMaxReplicas" -}}
{{- min (int .Values.keda.maxReplicaCount) (int .Values.keda.inputPartitions) }}
{{- end }}

{{- define "defender-enricher.strategy" -}}
{{- if .Values.strategy }}
{{- toYaml .Values.strategy }}
{{- else if include "defender-enricher.redis" . }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- else }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 0
  maxUnavailable: 1
{{- end }}
{{- end }}
