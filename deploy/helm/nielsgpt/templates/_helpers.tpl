{{/* Names and labels shared by every object of the release. */}}

{{- define "nielsgpt.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nielsgpt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nielsgpt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nielsgpt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nielsgpt.labels" -}}
{{ include "nielsgpt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The grace period must outlast the whole shutdown: the drain delay, streams
finishing within SHUTDOWN_TIMEOUT, then one write deadline for what was cut,
and a margin; otherwise the kubelet kills streams the server meant to end
cleanly.
*/}}
{{- define "nielsgpt.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add .Values.drainDelaySeconds .Values.shutdownTimeoutSeconds .Values.writeTimeoutSeconds 5 -}}
{{- end -}}
{{- end -}}

{{/* The model's environment, by model.source. */}}
{{- define "nielsgpt.modelEnv" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "demo" }}
- name: MODEL
  value: demo
{{- else if eq $m.source "volume" }}
{{- if not $m.volume.claimName }}
{{- fail "model.source is volume: set model.volume.claimName to the PersistentVolumeClaim holding the model" }}
{{- end }}
{{- if and $m.volume.readOnly (hasSuffix ".pt" $m.volume.file) }}
{{- fail "model.volume.file is a .pt on a read-only volume: it is converted at start and cached beside it. Convert it once (nielsgpt convert) and serve the .gguf, or set model.volume.readOnly=false" }}
{{- end }}
- name: MODEL
  value: {{ printf "/models/%s" $m.volume.file | quote }}
{{- else if eq $m.source "hub" }}
- name: MODEL
  value: ""
- name: CKPT_REPO_ID
  value: {{ $m.hub.repoId | quote }}
- name: CKPT_FILENAME
  value: {{ $m.hub.filename | quote }}
- name: CKPT_DIR
  value: /checkpoints
{{- with $m.hub.endpoint }}
- name: HF_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $m.hub.tokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $m.hub.tokenSecret.key }}
{{- end }}
{{- else }}
{{- fail (printf "model.source %q: want demo, volume or hub" $m.source) }}
{{- end }}
{{- end -}}
